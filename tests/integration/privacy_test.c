/* The logs of a full run hold no full phone number, message text, profile name or token. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <json-c/json.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tests/integration/harness.h"

#define AUDIENCE "https://pushworker.example/"
#define SECRETS_MAX 4096

static pwt_worker_t worker;
static char *secrets[SECRETS_MAX];
static size_t n_secrets;

/* base64url without padding, as JWTs use (written here, independent of proto/). */
static char *b64url(const char *s)
{
    size_t n = strlen(s);
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)s, (int)n);
    for (char *p = out; *p; p++)
        *p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
    char *eq = strchr(out, '=');
    if (eq != NULL)
        *eq = '\0';
    return out;
}

/* A token as Cloud Run hands it over behind IAM (PUBSUB_AUTH=claims): signature replaced. */
static char *stripped_token(const char *audience)
{
    char claims[512];
    long now = (long)time(NULL);
    snprintf(claims, sizeof claims,
             "{\"iss\":\"https://accounts.google.com\",\"aud\":\"%s\",\"iat\":%ld,\"exp\":%ld,"
             "\"email\":\"push@example.iam.gserviceaccount.com\",\"email_verified\":true}",
             audience, now, now + 3600);
    char *h = b64url("{\"alg\":\"RS256\",\"kid\":\"k1\",\"typ\":\"JWT\"}"), *c = b64url(claims);
    char *t = malloc(strlen(h) + strlen(c) + 64);
    sprintf(t, "%s.%s.SIGNATURE_REMOVED_BY_GOOGLE", h, c);
    free(h);
    free(c);
    return t;
}

static void add_secret(const char *s)
{
    if (n_secrets < SECRETS_MAX)
        secrets[n_secrets++] = strdup(s);
}

static int all_digits(const char *s)
{
    size_t d = 0;
    for (const char *p = s; *p; p++) {
        if (*p >= '0' && *p <= '9')
            d++;
        else if (*p != '+')
            return 0;
    }
    return d >= 8;
}

/* Collects what must never be logged: phone numbers, texts a person wrote, profile names, usernames and user ids. */
static void collect(json_object *o, const char *key)
{
    static const char *const personal[] = {"body",    "caption",      "title",        "text",    "name",
                                           "formatted_name", "description", "address", "username", "user_id",
                                           "from_user_id",   "recipient_user_id"};
    if (json_object_is_type(o, json_type_object)) {
        json_object_object_foreach(o, k, v) collect(v, k);
    } else if (json_object_is_type(o, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(o); i++)
            collect(json_object_array_get_idx(o, i), key);
    } else if (json_object_is_type(o, json_type_string)) {
        const char *s = json_object_get_string(o);
        if (key != NULL && strcmp(key, "display_phone_number") != 0 && all_digits(s)) {
            add_secret(s);
            return;
        }
        for (size_t i = 0; key != NULL && i < sizeof personal / sizeof personal[0]; i++)
            if (strcmp(key, personal[i]) == 0 && strlen(s) >= 6)
                add_secret(s);
    }
}

/* Pushes every fixture of a folder; webhook bodies are wrapped, envelopes sent as they are. */
static void push_folder(const char *folder, int wrap, const char *token, int *n)
{
    char dir[1024], auth[2048];
    snprintf(dir, sizeof dir, "%s/%s", getenv("PW_FIXTURES"), folder);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || strstr(e->d_name, ".json") == NULL)
            continue;
        char rel[600], id[64];
        snprintf(rel, sizeof rel, "%s/%s", folder, e->d_name);
        size_t len;
        char *body = pwt_read_fixture(rel, &len);
        json_object *root = json_tokener_parse(body);
        if (root != NULL) {
            collect(root, NULL);
            json_object *msg, *data;
            /* inside an envelope, the payload is base64 */
            if (json_object_object_get_ex(root, "message", &msg) && json_object_object_get_ex(msg, "data", &data) &&
                json_object_is_type(data, json_type_string)) {
                unsigned char dec[65536];
                int m = EVP_DecodeBlock(dec, (const unsigned char *)json_object_get_string(data),
                                        (int)json_object_get_string_len(data));
                if (m > 0 && m < (int)sizeof dec) {
                    dec[m] = '\0';
                    json_object *inner = json_tokener_parse((char *)dec);
                    collect(inner, NULL);
                    json_object_put(inner);
                }
            }
            json_object_put(root);
        }
        snprintf(id, sizeof id, "privacy-%d", ++*n);
        char *push = wrap ? pwt_wrap(body, len, id, "projects/p/subscriptions/s", "2024-03-06T05:00:00Z") : NULL;
        long status = pwt_post(&worker, "/", wrap ? push : body, wrap ? strlen(push) : len, PWT_LIST(auth), NULL);
        assert_true(status == 204);
        free(push);
        free(body);
    }
    closedir(d);
}

static void logs_hold_no_phone_number_text_or_token(void **state)
{
    (void)state;
    char *token = stripped_token(AUDIENCE);
    char *wrong = stripped_token("https://elsewhere.example/");
    int n = 0;
    push_folder("meta", 1, token, &n);
    push_folder("aisensy", 1, token, &n);
    push_folder("envelopes", 0, token, &n);
    push_folder("bad", 1, token, &n);
    /* rejected tokens are logged as rejections: the token itself must not be */
    char auth[2048];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", wrong);
    assert_int_equal(pwt_post(&worker, "/", "{}", 2, PWT_LIST(auth), NULL), 401);
    assert_int_equal(pwt_post(&worker, "/", "{}", 2, PWT_LIST("Authorization: Bearer not.a.token"), NULL), 401);
    add_secret(token);
    add_secret(wrong);
    add_secret(strchr(token, '.') + 1); /* the claims part alone */

    char *log = pwt_worker_log(&worker);
    assert_true(strlen(log) > 1000); /* the worker did log (debug): the check is not vacuous */
    assert_true(n_secrets > 40);
    size_t leaks = 0;
    for (size_t i = 0; i < n_secrets; i++) {
        if (strstr(log, secrets[i]) != NULL) {
            fprintf(stderr, "logged: \"%s\"\n", secrets[i]);
            leaks++;
        }
    }
    printf("privacy: %d pushes, %zu log bytes, %zu personal values checked, %zu found\n", n, strlen(log), n_secrets, leaks);
    assert_int_equal(leaks, 0);
    free(log);
    free(token);
    free(wrong);
}

static int setup(void **state)
{
    (void)state;
    return pwt_suite_start("privacy", &worker, PWT_LIST("PUBSUB_AUTH=claims", "PUBSUB_AUDIENCE=" AUDIENCE, "LOG_LEVEL=debug"));
}

static int teardown(void **state)
{
    (void)state;
    pwt_suite_stop(&worker);
    for (size_t i = 0; i < n_secrets; i++)
        free(secrets[i]);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(logs_hold_no_phone_number_text_or_token)};
    return cmocka_run_group_tests_name("integration/privacy", tests, setup, teardown);
}
