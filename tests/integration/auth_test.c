/* Authentication tests: OIDC push tokens made by scripts/mint-token (openssl CLI), checked by the real worker
 * against a JWKS server this test controls (scripts/mint-token serve), into a real PostgreSQL. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "tests/integration/harness.h"
#include "tests/integration/httpc.h"
#include "tests/integration/jwks.h"
#include "tests/integration/proc.h"
#include "tests/integration/util.h"

/* ---- what the tokens and pushes carry ---------------------------------------------------------- */

/* The subscription's audience: compared exactly, so the tests below vary it by one character or case. */
#define AUD "https://pushworker-7q2x9b4k3a-el.a.run.app/push"
#define AUD_HOST_UPPER "https://PUSHWORKER-7Q2X9B4K3A-EL.A.RUN.APP/push"
#define SA "whatsapp-push@acme-prod.iam.gserviceaccount.com"
#define KID_A "test-key-1"          /* the key the main JWKS server publishes */
#define KID_UNKNOWN "unknown-kid-7" /* a real key, published nowhere */
#define KID_B "rotated-key-2"       /* added to a served key set during the rotation test */
#define WWW_AUTH_INVALID "Bearer error=\"invalid_token\""

#define SUB "projects/acme-prod/subscriptions/whatsapp-events-push"
#define PUBLISH_TIME "2024-03-06T10:00:00.250Z"
#define PUBLISH_TIME_PG "2024-03-06 10:00:00.25+00"
#define PNID "106540352242922"
#define W_A "wamid.HBgMOTE5ODc2NTQzMjEwFQIAERgSQTFCMkMzRDRFNUY2QTdCOEM5AA=="
#define CONV_SENT                                                                                                                  \
    "{\"id\": \"6ceb9d929c2a3e5e36d7d6a2b8ab7b2c\", \"origin\": {\"type\": \"marketing\"}, \"expiration_timestamp\": "             \
    "\"1709755200\"}"
#define PRICING "{\"type\": \"regular\", \"billable\": true, \"category\": \"marketing\", \"pricing_model\": \"PMP\"}"
#define RECEIPT(id, outcome) SUB "|" id "|" PUBLISH_TIME_PG "|" outcome

#define Q_LOGS PWT_Q_LOGS
#define Q_EVENTS PWT_Q_EVENTS
#define Q_RECEIPTS PWT_Q_RECEIPTS

/* The rows of meta/status_sent.json pushed under message id `id`. */
#define SENT_EVENT(id) W_A "|sent|2024-03-05 20:00:00+00|919876543210|" PNID "|" CONV_SENT "|" PRICING "|NULL|campaign=spring24|" id
#define SENT_LOG W_A "|+919876543210|{\"sent\": \"2024-03-05T20:00:00Z\"}|sent|NULL|2024-03-05 20:00:00+00"

#define PARAMS PWT_LIST

/* ---- this binary's scratch directory, its keys and JWKS servers ---------------------------------------- */

static char tmp_root[256];  /* /tmp/pwt-auth-XXXXXX, removed at the end */
static char keys_dir[320];  /* key A (kid test-key-1): what the main JWKS server publishes */
static char other_dir[320]; /* another key with kid test-key-1, and KID_UNKNOWN */

static void remove_tmp_root(void)
{
    if (tmp_root[0] != '\0' && getenv("PWT_KEEP_LOGS") == NULL)
        pwt_rm_rf(tmp_root);
}

/**
 * `mint-token sign dir --aud AUD --email SA <args>`: a token that is valid for the main worker unless args
 * override something (mint-token takes the last value of an option). Fails the test when mint-token fails.
 * MINT(dir, "--kid", "x", ...) or MINT(dir).
 */
#define MINT(...) MINT_(__VA_ARGS__, NULL)
#define MINT_(dir, ...) pwt__mint_sign(__FILE__, __LINE__, (dir), (const char *const[]){"--aud", AUD, "--email", SA, __VA_ARGS__})

/* A directory under tmp_root serving key A only: copies of keys_dir's key A files and jwks.json. */
static void dir_with_key_a(const char *name, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s/%s", tmp_root, name);
    if (mkdir(out, 0700) != 0 && errno != EEXIST)
        pwt_fail(__FILE__, __LINE__, "mkdir %s: %s", out, strerror(errno));
    static const char *const files[] = {KID_A ".key", KID_A ".pub.pem", KID_A ".jwk", "jwks.json"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char from[400], to[400];
        snprintf(from, sizeof from, "%s/%s", keys_dir, files[i]);
        snprintf(to, sizeof to, "%s/%s", out, files[i]);
        if (pwt_copy_file(from, to) != 0)
            pwt_fail(__FILE__, __LINE__, "copy %s to %s failed", from, to);
    }
}

/* `scripts/mint-token serve dir PORT [--max-age max_age]` on a free loopback port, its log under tmp_root. 0 or -1. */
static int jwks_start_max_age(pwt_jwks_server_t *s, const char *dir, const char *name, const char *max_age)
{
    char prefix[300];
    snprintf(prefix, sizeof prefix, "%s/jwks-%s", tmp_root, name);
    return pwt_jwks_start(s, NULL, dir, 0, max_age != NULL ? PWT_LIST("--max-age", max_age) : NULL, prefix);
}

static int jwks_start(pwt_jwks_server_t *s, const char *dir, const char *name)
{
    return jwks_start_max_age(s, dir, name, NULL);
}

/* How many requests the server has answered so far (its "jwks-request" lines); waiting up to timeout_ms for n of them. */
#define jwks_fetches(s) pwt_jwks_count((s), "jwks-request ")
#define jwks_wait_fetches(s, n, timeout_ms) pwt_jwks_wait_count((s), "jwks-request ", (n), (timeout_ms))

/* ---- workers ---------------------------------------------------------------------------------------- */

static pwt_jwks_server_t main_server;  /* keys_dir, for the whole binary */
static pwt_worker_t worker;        /* verify mode against main_server; most tests talk to it */
static pwt_worker_t claims_worker; /* PUBSUB_AUTH=claims, started by the first claims test */

/* Per-test extras, stopped by the teardown whatever happened in the test. */
static pwt_jwks_server_t test_server;
static pwt_worker_t test_worker;
static pwt_worker_t manual_worker; /* started without the harness's readiness wait */

/*
 * The main worker: the key set is fetched once at start, and JWKS_MIN_REFRESH_MS is long, so for the whole
 * run the set counts as fresh: an unknown kid is a 401, never a refetch.
 */
static int start_main_worker(void)
{
    return pwt_worker_start(&worker, PARAMS("PUBSUB_AUTH=verify", "PUBSUB_AUDIENCE=" AUD, "PUBSUB_SERVICE_ACCOUNT=" SA,
                                            main_server.url_env, "JWKS_MIN_REFRESH_MS=600000", "WORKER_THREADS=2"));
}

/* A verify-mode worker against server s with this JWKS_MIN_REFRESH_MS. */
static void start_test_worker(const pwt_jwks_server_t *s, const char *min_refresh_env, const char *threads_env)
{
    if (pwt_worker_start(&test_worker, PARAMS("PUBSUB_AUTH=verify", "PUBSUB_AUDIENCE=" AUD, "PUBSUB_SERVICE_ACCOUNT=" SA,
                                              s->url_env, min_refresh_env, threads_env)) != 0)
        pwt_fail(__FILE__, __LINE__, "the test worker did not start");
}

static void ensure_claims_worker(void)
{
    if (pwt_worker_alive(&claims_worker))
        return;
    if (pwt_worker_start(&claims_worker, PARAMS("PUBSUB_AUTH=claims", "PUBSUB_AUDIENCE=" AUD, "PUBSUB_SERVICE_ACCOUNT=" SA,
                                                "WORKER_THREADS=1")) != 0)
        pwt_fail(__FILE__, __LINE__, "the claims-mode worker did not start");
}

static int group_setup(void **state)
{
    (void)state;
    atexit(pwt_jwks_stop_all);
    if (pwt_make_work_dir("pwt-auth", tmp_root, sizeof tmp_root) != 0)
        return -1;
    atexit(remove_tmp_root);
    char mint_err[300];
    snprintf(mint_err, sizeof mint_err, "%s/mint-token.stderr", tmp_root);
    snprintf(keys_dir, sizeof keys_dir, "%s/keys", tmp_root);
    snprintf(other_dir, sizeof other_dir, "%s/other", tmp_root);
    if (pwt_mint_init(mint_err) != 0)
        return -1;
    /* other_dir's test-key-1 has key A's kid but not its key: its signatures are bad ones. */
    if (pwt_mint_keygen(keys_dir, KID_A) != 0 || pwt_mint_keygen(other_dir, KID_A) != 0 || pwt_mint_keygen(other_dir, KID_UNKNOWN) != 0)
        return -1;
    if (pwt_suite_start("auth", NULL, NULL) != 0)
        return -1;
    if (jwks_start(&main_server, keys_dir, "main") != 0)
        return -1;
    return start_main_worker();
}

static int group_teardown(void **state)
{
    (void)state;
    int ok = 1;
    int code = pwt_worker_stop(&worker);
    if (code != 0 && code != -1) {
        fprintf(stderr, "worker exited with %d after SIGTERM (expected 0)\n", code);
        ok = 0;
    }
    code = pwt_worker_stop(&claims_worker);
    if (code != 0 && code != -1) {
        fprintf(stderr, "claims worker exited with %d after SIGTERM (expected 0)\n", code);
        ok = 0;
    }
    pwt_jwks_stop(&main_server);
    pwt_db_drop();
    return ok ? 0 : -1;
}

/* Before each test: empty tables and a live main worker. */
static int fresh_tables(void **state)
{
    (void)state;
    if (!pwt_worker_alive(&worker)) {
        fprintf(stderr, "the main worker had died; restarting it\n");
        pwt_worker_print_log(&worker, 40);
        if (start_main_worker() != 0)
            return -1;
    }
    pwt_truncate_all();
    return 0;
}

/* After each test: per-test processes stopped; the main worker (and claims worker) must still be running. */
static int cleanup_and_check_alive(void **state)
{
    (void)state;
    int ok = 1;
    if (test_worker.pid > 0) {
        if (!pwt_worker_alive(&test_worker)) {
            fprintf(stderr, "the test's worker died during the test\n");
            pwt_worker_print_log(&test_worker, 60);
            ok = 0;
        }
        pwt_worker_stop(&test_worker);
    }
    if (manual_worker.pid > 0)
        pwt_worker_stop(&manual_worker);
    pwt_jwks_stop(&test_server);
    if (!pwt_worker_alive(&worker)) {
        fprintf(stderr, "the main worker died during this test\n");
        pwt_worker_print_log(&worker, 60);
        ok = 0;
    }
    if (claims_worker.pid > 0 && !pwt_worker_alive(&claims_worker)) {
        fprintf(stderr, "the claims worker died during this test\n");
        ok = 0;
    }
    return ok ? 0 : -1;
}

/* ---- pushes and checks ---------------------------------------------------------------------------- */

/* meta/status_sent.json wrapped under message id, malloc'd. */
static char *sent_push(const char *message_id)
{
    return pwt_wrap_fixture("meta/status_sent.json", message_id, SUB, PUBLISH_TIME);
}

/* Posts meta/status_sent.json (message id) to w with "Authorization: <authz>" (NULL: no such header). */
static long post_authz(const pwt_worker_t *w, const char *authz, const char *message_id, pwt_response_t *resp)
{
    char *body = sent_push(message_id);
    char *h = authz != NULL ? pwt_xasprintf("Authorization: %s", authz) : NULL;
    long status = pwt_post(w, "/", body, strlen(body), h != NULL ? PARAMS(h) : NULL, resp);
    free(h);
    free(body);
    return status;
}

/* The same with "Authorization: Bearer <token>". */
static long post_token(const pwt_worker_t *w, const char *token, const char *message_id, pwt_response_t *resp)
{
    char *authz = pwt_xasprintf("Bearer %s", token);
    long status = post_authz(w, authz, message_id, resp);
    free(authz);
    return status;
}

/* No row in any table the worker writes. */
static void assert_nothing_stored_(const char *file, int line)
{
    static const char *const tables[] = {"pubsub_receipts", "dead_letters",     "message_logs",
                                         "status_events",   "inbound_messages", "contacts"};
    for (size_t i = 0; i < sizeof tables / sizeof *tables; i++) {
        char *sql = pwt_xasprintf("SELECT t::text FROM %s t", tables[i]);
        pwt__assert_rows(file, line, sql, NULL, "");
        free(sql);
    }
}
#define assert_nothing_stored() assert_nothing_stored_(__FILE__, __LINE__)

/* The answer's extra headers for its status: WWW-Authenticate exactly on 401, Retry-After on 503. */
static void assert_rejection_headers_(const char *file, int line, const pwt_response_t *r)
{
    if (r->status == 401) {
        char *h = pwt_response_header(r, "WWW-Authenticate");
        if (h == NULL || strcmp(h, WWW_AUTH_INVALID) != 0)
            pwt_fail(file, line, "401 with WWW-Authenticate: %s (expected %s)", h != NULL ? h : "(absent)", WWW_AUTH_INVALID);
        free(h);
    } else if (r->status == 503) {
        char *h = pwt_response_header(r, "Retry-After");
        if (h == NULL)
            pwt_fail(file, line, "503 without Retry-After");
        free(h);
    }
}

/* Posts the push with this Authorization value to the main worker and expects `status`, its headers, and no rows. */
static void expect_rejected_(const char *file, int line, const char *authz, long status)
{
    pwt_response_t r = {0};
    long got = post_authz(&worker, authz, "2001", &r);
    pwt__assert_status(file, line, got, status);
    assert_rejection_headers_(file, line, &r);
    pwt_response_free(&r);
    assert_nothing_stored_(file, line);
}
#define expect_rejected(authz, status) expect_rejected_(__FILE__, __LINE__, (authz), (status))

static void expect_token_rejected_(const char *file, int line, const char *token, long status)
{
    char *authz = pwt_xasprintf("Bearer %s", token);
    expect_rejected_(file, line, authz, status);
    free(authz);
}
#define expect_token_rejected(token, status) expect_token_rejected_(__FILE__, __LINE__, (token), (status))

/* A token minted from dir with the mint-token arguments that follow (see MINT) must be refused with status. */
static void expect_minted_rejected_(const char *file, int line, char *token, long status)
{
    expect_token_rejected_(file, line, token, status);
    free(token);
}
#define expect_minted_rejected(status, ...) expect_minted_rejected_(__FILE__, __LINE__, MINT(__VA_ARGS__), (status))

/* The push with this token is answered 204 and stored: its receipt under message_id. */
static void expect_accepted_(const char *file, int line, const pwt_worker_t *w, const char *token, const char *message_id)
{
    pwt__assert_status(file, line, post_token(w, token, message_id, NULL), 204);
    char *receipt = pwt_xasprintf(SUB "|%s|" PUBLISH_TIME_PG "|stored", message_id);
    pwt__assert_rows(file, line,
                     "SELECT subscription, message_id, publish_time, outcome FROM pubsub_receipts WHERE message_id = $1",
                     PARAMS(message_id), receipt);
    free(receipt);
}
#define expect_accepted(w, token, id) expect_accepted_(__FILE__, __LINE__, (w), (token), (id))

static char *last_part(char *token)
{
    char *dot = strrchr(token, '.');
    return dot != NULL ? dot + 1 : token + strlen(token);
}

/* ---- accepted tokens -------------------------------------------------------------------------------- */

static void valid_token_is_accepted_and_the_push_stored_exactly(void **state)
{
    (void)state;
    char *tok = MINT(keys_dir);
    pwt_assert_status(post_token(&worker, tok, "1101", NULL), 204);
    pwt_assert_rows(Q_EVENTS, SENT_EVENT("1101"));
    pwt_assert_rows(Q_LOGS, SENT_LOG);
    pwt_assert_rows(Q_RECEIPTS, RECEIPT("1101", "stored"));
    pwt_assert_rows("SELECT t::text FROM dead_letters t", "");
    pwt_assert_rows("SELECT t::text FROM inbound_messages t", "");
    free(tok);
}

static void bearer_scheme_is_case_insensitive(void **state)
{
    (void)state;
    char *tok = MINT(keys_dir, "--exp-in", "3590");
    char *authz = pwt_xasprintf("bearer %s", tok);
    pwt_assert_status(post_authz(&worker, authz, "1102", NULL), 204);
    pwt_assert_rows(Q_RECEIPTS, RECEIPT("1102", "stored"));
    free(authz);
    free(tok);
}

static void issuer_without_https_scheme_is_accepted(void **state)
{
    (void)state;
    char *tok = MINT(keys_dir, "--iss", "accounts.google.com");
    expect_accepted(&worker, tok, "1103");
    free(tok);
}

static void token_expired_30s_ago_is_accepted_within_60s_skew(void **state)
{
    (void)state;
    char *tok = MINT(keys_dir, "--iat-offset", "-3630", "--exp-in", "-30");
    expect_accepted(&worker, tok, "1104");
    free(tok);
}

static void token_issued_30s_in_the_future_is_accepted_within_skew(void **state)
{
    (void)state;
    char *tok = MINT(keys_dir, "--iat-offset", "30", "--exp-in", "3630");
    expect_accepted(&worker, tok, "1105");
    free(tok);
}

/* ---- rejected tokens: header and signature ---------------------------------------------------------- */

static void alg_none_with_empty_signature_is_401(void **state)
{
    (void)state;
    char *tok = MINT(keys_dir, "--alg", "none");
    assert_int_equal(strlen(last_part(tok)), 0); /* "header.claims." */
    expect_token_rejected(tok, 401);
    free(tok);
}

static void hs256_keyed_with_the_public_key_is_401(void **state)
{
    (void)state;
    char *tok = MINT(keys_dir, "--alg", "HS256"); /* HMAC keyed with test-key-1.pub.pem: key confusion */
    expect_token_rejected(tok, 401);
    free(tok);
}

static void es256_header_is_401_even_with_a_valid_rs256_signature(void **state)
{
    (void)state;
    expect_minted_rejected(401, keys_dir, "--alg", "ES256");
}

static void unknown_kid_with_a_fresh_key_set_is_401_and_fetches_nothing(void **state)
{
    (void)state;
    int before = jwks_fetches(&main_server);
    char *tok = MINT(other_dir, "--kid", KID_UNKNOWN);
    expect_token_rejected(tok, 401);
    pwt_sleep_ms(300); /* a fetch, had one been asked for, starts at once */
    assert_int_equal(jwks_fetches(&main_server), before);
    free(tok);
}

static void signature_by_another_key_with_the_same_kid_is_401(void **state)
{
    (void)state;
    expect_minted_rejected(401, other_dir, "--kid", KID_A);
}

static void truncated_signature_is_401(void **state)
{
    (void)state;
    char *tok = MINT(keys_dir);
    tok[strlen(tok) - 6] = '\0';
    expect_token_rejected(tok, 401);
    free(tok);
}

static void token_cut_to_header_and_claims_is_401(void **state)
{
    (void)state;
    char *tok = MINT(keys_dir);
    *strrchr(tok, '.') = '\0'; /* "header.claims": two parts */
    expect_token_rejected(tok, 401);
    char *with_dot = pwt_xasprintf("%s.", tok); /* "header.claims.": an empty signature */
    expect_token_rejected(with_dot, 401);
    free(with_dot);
    free(tok);
}

static void padded_base64_signature_is_401(void **state)
{
    (void)state;
    char *tok = MINT(keys_dir);
    /* 256 signature bytes are 342 base64url characters: "==" is the padding a lenient decoder would accept. */
    assert_int_equal(strlen(last_part(tok)), 342);
    char *padded = pwt_xasprintf("%s==", tok);
    expect_token_rejected(padded, 401);
    free(padded);
    free(tok);
}

static void standard_base64_alphabet_in_signature_is_401(void **state)
{
    (void)state;
    /* The same signature bytes in the '+' '/' alphabet: valid to a decoder that accepts both. */
    char *tok = NULL;
    char *hit = NULL;
    for (int i = 0; i < 5 && hit == NULL; i++) {
        free(tok);
        char exp_in[16];
        snprintf(exp_in, sizeof exp_in, "%d", 3500 - i);
        tok = MINT(keys_dir, "--exp-in", exp_in);
        char *sig = last_part(tok);
        if ((hit = strchr(sig, '-')) != NULL)
            *hit = '+';
        else if ((hit = strchr(sig, '_')) != NULL)
            *hit = '/';
    }
    assert_non_null(hit);
    expect_token_rejected(tok, 401);
    free(tok);
}

static void oversized_token_over_8192_bytes_is_401(void **state)
{
    (void)state;
    long long now = (long long)time(NULL);
    char pad[9001];
    memset(pad, 'A', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    char *claims = pwt_xasprintf("{\"aud\":\"" AUD "\",\"email\":\"" SA "\",\"email_verified\":true,\"exp\":%lld,\"iat\":%lld,"
                             "\"iss\":\"https://accounts.google.com\",\"sub\":\"100000000000000000001\",\"pad\":\"%s\"}",
                             now + 3600, now, pad);
    char *tok = MINT(keys_dir, "--claims-json", claims);
    assert_true(strlen(tok) > 8192);
    expect_token_rejected(tok, 401);
    free(tok);
    free(claims);
}

/* ---- rejected tokens: claims ------------------------------------------------------------------------ */

static void expired_beyond_60s_skew_is_401(void **state)
{
    (void)state;
    expect_minted_rejected(401, keys_dir, "--iat-offset", "-3720", "--exp-in", "-120");
}

static void issued_in_the_future_beyond_skew_is_401(void **state)
{
    (void)state;
    expect_minted_rejected(401, keys_dir, "--iat-offset", "300", "--exp-in", "3900");
}

static void nbf_in_the_future_beyond_skew_is_401(void **state)
{
    (void)state;
    expect_minted_rejected(401, keys_dir, "--nbf-offset", "300");
}

static void wrong_issuer_is_401(void **state)
{
    (void)state;
    expect_minted_rejected(401, keys_dir, "--iss", "https://accounts.google.com.evil.example");
}

static void wrong_audience_is_401(void **state)
{
    (void)state;
    expect_minted_rejected(401, keys_dir, "--aud", "https://another-service-7q2x9b4k3a-el.a.run.app/push");
}

static void audience_differing_only_in_case_is_401(void **state)
{
    (void)state;
    expect_minted_rejected(401, keys_dir, "--aud", AUD_HOST_UPPER);
}

static void audience_with_a_trailing_slash_added_is_401(void **state)
{
    (void)state;
    expect_minted_rejected(401, keys_dir, "--aud", AUD "/");
}

static void token_of_another_service_account_is_403(void **state)
{
    (void)state;
    expect_minted_rejected(403, keys_dir, "--email", "intruder@other-project.iam.gserviceaccount.com");
}

static void email_verified_false_is_401(void **state)
{
    (void)state;
    expect_minted_rejected(401, keys_dir, "--email-verified", "false");
}

/* ---- rejected requests: the Authorization header itself -------------------------------------------- */

static void basic_scheme_is_401(void **state)
{
    (void)state;
    expect_rejected("Basic d2hhdHNhcHA6c2VjcmV0", 401);
}

static void raw_token_without_bearer_scheme_is_401(void **state)
{
    (void)state;
    char *tok = MINT(keys_dir);
    expect_rejected(tok, 401);
    free(tok);
}

static void missing_authorization_header_is_401(void **state)
{
    (void)state;
    expect_rejected(NULL, 401);
}

static void bearer_without_token_is_401(void **state)
{
    (void)state;
    expect_rejected("Bearer", 401);
    expect_rejected("Bearer    ", 401);
}

/* ---- keys: rotation, outages, none at all, a storm of unknown kids ----------------------------------- */

static void rotated_in_key_is_fetched_once_and_its_token_accepted(void **state)
{
    (void)state;
    char dir[400];
    dir_with_key_a("rotation", dir, sizeof dir);
    if (jwks_start(&test_server, dir, "rotation") != 0)
        fail_msg("JWKS server did not start");
    start_test_worker(&test_server, "JWKS_MIN_REFRESH_MS=1000", "WORKER_THREADS=2");
    long long loaded_at = pwt_now_ms(); /* the worker was ready, so its one fetch was done */
    int f0 = jwks_fetches(&test_server);
    assert_int_equal(f0, 1);

    char *tok_a = MINT(dir);
    expect_accepted(&test_worker, tok_a, "3001");

    /* Key B appears in the served set (keygen rebuilds jwks.json from every *.jwk: A and B). */
    if (pwt_mint_keygen(dir, KID_B) != 0)
        fail_msg("keygen B failed");
    char *tok_b = MINT(dir, "--kid", KID_B);
    /* The cached set must be older than JWKS_MIN_REFRESH_MS, or an unknown kid is (rightly) a 401. */
    long long wait = loaded_at + 1200 - pwt_now_ms();
    if (wait > 0)
        pwt_sleep_ms((long)wait);

    long long deadline = pwt_now_ms() + 3000;
    long status;
    int attempts = 0;
    for (;;) {
        pwt_response_t r = {0};
        status = post_token(&test_worker, tok_b, "3002", &r);
        attempts++;
        if (status != 204) {
            pwt_assert_status(status, 503); /* only "refetch requested, retry" may come before the 204 */
            assert_rejection_headers_(__FILE__, __LINE__, &r);
        }
        pwt_response_free(&r);
        if (status == 204 || pwt_now_ms() > deadline)
            break;
        pwt_sleep_ms(250);
    }
    pwt_assert_status(status, 204);
    fprintf(stderr, "rotation: key B accepted after %d attempt(s)\n", attempts);
    pwt_assert_rows(Q_RECEIPTS, RECEIPT("3001", "stored") "\n" RECEIPT("3002", "stored"));
    pwt_assert_rows(Q_EVENTS, SENT_EVENT("3001")); /* 3002 carries the same status event again */

    /* Exactly one fetch more than at start, also after JWKS_MIN_REFRESH_MS more (no second, coalesced one). */
    pwt_sleep_ms(1500);
    assert_int_equal(jwks_fetches(&test_server), f0 + 1);
    /* And key A still works after the rotation (a new token: not from the verified-token cache). */
    char *tok_a2 = MINT(dir, "--exp-in", "3500");
    expect_accepted(&test_worker, tok_a2, "3003");
    assert_int_equal(jwks_fetches(&test_server), f0 + 1);
    free(tok_a);
    free(tok_a2);
    free(tok_b);
}

static void jwks_server_failing_or_gone_keeps_the_cached_keys(void **state)
{
    (void)state;
    char dir[400];
    dir_with_key_a("down", dir, sizeof dir);
    if (jwks_start(&test_server, dir, "down") != 0)
        fail_msg("JWKS server did not start");
    start_test_worker(&test_server, "JWKS_MIN_REFRESH_MS=1000", "WORKER_THREADS=2");
    long long loaded_at = pwt_now_ms();
    assert_int_equal(jwks_fetches(&test_server), 1);
    char *tok_unknown = MINT(other_dir, "--kid", KID_UNKNOWN);
    char *tok_1 = MINT(dir, "--exp-in", "3600");
    char *tok_2 = MINT(dir, "--exp-in", "3599");
    char *tok_3 = MINT(dir, "--exp-in", "3598");

    /* 1. The server answers 500: a refetch (asked for by an unknown kid on a stale set) fails. */
    char fail_path[450];
    snprintf(fail_path, sizeof fail_path, "%s/fail", dir);
    FILE *f = fopen(fail_path, "w");
    assert_non_null(f);
    fclose(f);
    long long wait = loaded_at + 1200 - pwt_now_ms();
    if (wait > 0)
        pwt_sleep_ms((long)wait);
    pwt_response_t r = {0};
    pwt_assert_status(post_token(&test_worker, tok_unknown, "4000", &r), 503);
    assert_rejection_headers_(__FILE__, __LINE__, &r);
    pwt_response_free(&r);
    assert_true(jwks_wait_fetches(&test_server, 2, 3000) >= 2); /* then retries with backoff while it fails */
    char *log = pwt_read_text(test_server.log_path);
    assert_non_null(strstr(log, " 500\n"));
    free(log);
    pwt_sleep_ms(200); /* let the worker finish handling the failed fetch */
    expect_accepted(&test_worker, tok_1, "4001");
    pwt_assert_status(pwt_get(&test_worker, "/readyz", NULL), 200);

    /* 2. The server is gone altogether. */
    pwt_jwks_stop(&test_server);
    pwt_sleep_ms(1200); /* the set is stale again: the next unknown kid asks for a fetch, which cannot connect */
    pwt_assert_status(post_token(&test_worker, tok_unknown, "4002", NULL), 503);
    pwt_sleep_ms(300);
    expect_accepted(&test_worker, tok_2, "4003");
    expect_accepted(&test_worker, tok_3, "4004");
    pwt_assert_status(pwt_get(&test_worker, "/readyz", NULL), 200);
    pwt_assert_rows(Q_RECEIPTS, RECEIPT("4001", "stored") "\n" RECEIPT("4003", "stored") "\n" RECEIPT("4004", "stored"));
    char *wlog = pwt_worker_log(&test_worker);
    if (strstr(wlog, "keeping the previous keys") == NULL)
        pwt_fail(__FILE__, __LINE__, "the worker did not log a failed refresh that kept the previous keys");
    free(wlog);
    free(tok_unknown);
    free(tok_1);
    free(tok_2);
    free(tok_3);
}

/* A quiet GET: the status, or -1 when nothing answers. */
static long quiet_get(const pwt_worker_t *w, const char *path)
{
    char url[160];
    snprintf(url, sizeof url, "%s%s", w->base_url, path);
    CURL *c = pwt_http_easy(url, 1000L, NULL);
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    long status = pwt_http_perform(c);
    curl_easy_cleanup(c);
    return status;
}

/* The wall clock in milliseconds (the worker's fetch is judged recent or not against it, in whole seconds before). */
static long long wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleeps until the wall clock's milliseconds within the second reach ms (0..999), at most a second. */
static void sleep_to_phase(long ms)
{
    long long now = wall_ms(), at = now - now % 1000 + ms;
    if (at <= now)
        at += 1000;
    pwt_sleep_ms((long)(at - now));
}

/*
 * A token verified (and so cached) with key B is accepted from the cache only while B is in the key set:
 * once a fetched set no longer has B, the same token is verified afresh and fails (401: the set is fresh).
 * "Fresh" is within JWKS_MIN_REFRESH_MS (1000 ms here) of the fetch: the refetch is asked for at x.500 s
 * on the wall clock and the token sent just after the next whole second, about 0.5 s after the fetch,
 * which a comparison in whole seconds took for a set a second old (503 and a refetch, not 401).
 */
static void cached_token_is_401_once_its_key_leaves_the_key_set(void **state)
{
    (void)state;
    char dir[400];
    dir_with_key_a("revoked", dir, sizeof dir);
    if (pwt_mint_keygen(dir, KID_B) != 0) /* jwks.json now holds A and B */
        fail_msg("keygen B failed");
    if (jwks_start(&test_server, dir, "revoked") != 0)
        fail_msg("JWKS server did not start");
    start_test_worker(&test_server, "JWKS_MIN_REFRESH_MS=1000", "WORKER_THREADS=1");
    long long loaded_at = pwt_now_ms();
    int f0 = jwks_fetches(&test_server);
    char *tok_a = MINT(dir);
    char *tok_b = MINT(dir, "--kid", KID_B);
    char *tok_unknown = MINT(other_dir, "--kid", KID_UNKNOWN);
    expect_accepted(&test_worker, tok_b, "6001");
    expect_accepted(&test_worker, tok_b, "6002"); /* from the cache */

    /* B is revoked: the served set is key A alone again. */
    char from[400], to[450];
    snprintf(from, sizeof from, "%s/jwks.json", keys_dir);
    snprintf(to, sizeof to, "%s/jwks.json", dir);
    if (pwt_copy_file(from, to) != 0)
        fail_msg("copy %s failed", from);
    /* The worker fetches the new set: an unknown kid on a set older than JWKS_MIN_REFRESH_MS asks for it. */
    long long wait = loaded_at + 1200 - pwt_now_ms();
    if (wait > 0)
        pwt_sleep_ms((long)wait);
    sleep_to_phase(500);
    long long asked_at = wall_ms();
    pwt_assert_status(post_token(&test_worker, tok_unknown, "6003", NULL), 503);
    assert_true(jwks_wait_fetches(&test_server, f0 + 1, 5000) >= f0 + 1);
    /* The fetch is logged when the new set is installed. */
    long long deadline = pwt_now_ms() + 5000;
    for (;;) {
        char *log = pwt_worker_log(&test_worker);
        int n = 0;
        for (const char *p = log; (p = strstr(p, "JWKS fetched")) != NULL; p++)
            n++;
        free(log);
        if (n >= 2 || pwt_now_ms() > deadline)
            break;
        pwt_sleep_ms(50);
    }
    pwt_truncate_all();
    long long next_second = asked_at - asked_at % 1000 + 1000 + 30;
    if (wall_ms() < next_second)
        pwt_sleep_ms((long)(next_second - wall_ms()));
    /* The token that passed (and was cached) a moment ago is now refused, and nothing is written. */
    pwt_response_t r = {0};
    pwt_assert_status(post_token(&test_worker, tok_b, "6005", &r), 401);
    assert_rejection_headers_(__FILE__, __LINE__, &r);
    pwt_response_free(&r);
    assert_nothing_stored();
    /* Key A's tokens still pass. */
    expect_accepted(&test_worker, tok_a, "6004");
    free(tok_a);
    free(tok_b);
    free(tok_unknown);
}

/*
 * Keys are kept past their cache lifetime only JWKS_STALE_MAX_SECONDS while refreshes fail: then they are
 * dropped (an error logged), /readyz and every push (a cached token too) answer 503 "no signing keys", until
 * a fetch succeeds again.
 */
static void keys_past_the_stale_limit_are_dropped_and_pushes_503_until_a_fetch_succeeds(void **state)
{
    (void)state;
    char dir[400];
    dir_with_key_a("stale", dir, sizeof dir);
    /* max-age 0: the keys are stale as soon as they are fetched, so the limit below is all they get:
       8 s, so that the refetch below (about 1.2 s after the first push) still finds them within it
       even when the worker's start and the first push took seconds on a loaded machine. */
    if (jwks_start_max_age(&test_server, dir, "stale", "0") != 0)
        fail_msg("JWKS server did not start");
    if (pwt_worker_start(&test_worker, PARAMS("PUBSUB_AUTH=verify", "PUBSUB_AUDIENCE=" AUD, "PUBSUB_SERVICE_ACCOUNT=" SA,
                                              test_server.url_env, "JWKS_MIN_REFRESH_MS=1000", "JWKS_STALE_MAX_SECONDS=8",
                                              "WORKER_THREADS=1")) != 0)
        fail_msg("the test worker did not start");
    char *tok = MINT(dir);
    char *tok_unknown = MINT(other_dir, "--kid", KID_UNKNOWN);
    expect_accepted(&test_worker, tok, "7001");

    /* The server fails from now on. */
    char fail_path[450];
    snprintf(fail_path, sizeof fail_path, "%s/fail", dir);
    FILE *f = fopen(fail_path, "w");
    assert_non_null(f);
    fclose(f);
    /* An unknown kid asks for a refetch, which fails while the keys are stale: a warning, keys kept. */
    pwt_sleep_ms(1200);
    pwt_assert_status(post_token(&test_worker, tok_unknown, "7002", NULL), 503);
    long long deadline = pwt_now_ms() + 30000;
    long ready = 200;
    while (pwt_now_ms() < deadline && (ready = quiet_get(&test_worker, "/readyz")) == 200)
        pwt_sleep_ms(100);
    pwt_assert_status(ready, 503);

    /* Dropped: a cached token gets 503, not 204, and nothing is written. */
    pwt_truncate_all();
    pwt_response_t r = {0};
    pwt_assert_status(post_token(&test_worker, tok, "7003", &r), 503);
    assert_rejection_headers_(__FILE__, __LINE__, &r);
    if (r.body == NULL || strstr(r.body, "no signing keys") == NULL)
        pwt_fail(__FILE__, __LINE__, "503 body without \"no signing keys\": %s", r.body != NULL ? r.body : "(none)");
    pwt_response_free(&r);
    assert_nothing_stored();
    char *log = pwt_worker_log(&test_worker);
    if (strstr(log, "keeping the previous keys, stale for") == NULL || strstr(log, "\"severity\":\"WARNING\"") == NULL)
        pwt_fail(__FILE__, __LINE__, "no warning about a failed refresh of stale keys in the log");
    const char *err_line = strstr(log, "no signing keys: the keys expired");
    if (err_line == NULL)
        pwt_fail(__FILE__, __LINE__, "no error about the dropped keys in the log");
    free(log);

    /* The server recovers: the keys come back (retries back off: 1, 2, 4, 8 s...). */
    unlink(fail_path);
    deadline = pwt_now_ms() + 30000;
    while (pwt_now_ms() < deadline && (ready = quiet_get(&test_worker, "/readyz")) != 200)
        pwt_sleep_ms(100);
    pwt_assert_status(ready, 200);
    expect_accepted(&test_worker, tok, "7004");
    free(tok);
    free(tok_unknown);
}

/* PUBSUB_SERVICE_ACCOUNT=any: the explicit opt-out for local use; any account's token passes, and the
 * worker says so loudly at start. */
static void service_account_any_accepts_every_account_and_warns(void **state)
{
    (void)state;
    if (pwt_worker_start(&test_worker, PARAMS("PUBSUB_AUTH=verify", "PUBSUB_AUDIENCE=" AUD, "PUBSUB_SERVICE_ACCOUNT=any",
                                              main_server.url_env, "WORKER_THREADS=1")) != 0)
        fail_msg("the worker did not start with PUBSUB_SERVICE_ACCOUNT=any");
    char *tok = MINT(keys_dir, "--email", "someone-else@another-project.iam.gserviceaccount.com");
    expect_accepted(&test_worker, tok, "7101");
    char *log = pwt_worker_log(&test_worker);
    if (strstr(log, "PUBSUB_SERVICE_ACCOUNT=any: tokens of ANY Google service account") == NULL)
        pwt_fail(__FILE__, __LINE__, "no start-up warning about PUBSUB_SERVICE_ACCOUNT=any");
    free(log);
    free(tok);
}

/* Starts `$PW_WORKER serve` with env, without waiting for /readyz (which may never be 200): waits for /healthz instead. */
static void start_worker_unready(pwt_worker_t *w, const char *const *env)
{
    if (pwt_worker_start_at(w, 0, "/healthz", env) != 0)
        fail_msg("the worker did not answer /healthz");
}

static void without_any_keys_readyz_and_pushes_are_503_and_the_worker_survives(void **state)
{
    (void)state;
    /* A JWKS URL on a port nothing listens on: the first fetch and every retry fail. */
    char *url_env = pwt_xasprintf("OIDC_JWKS_URL=http://127.0.0.1:%d/oauth2/v3/certs", pwt_free_port());
    start_worker_unready(&manual_worker, PARAMS("PUBSUB_AUTH=verify", "PUBSUB_AUDIENCE=" AUD, "PUBSUB_SERVICE_ACCOUNT=" SA, url_env,
                                                "JWKS_MIN_REFRESH_MS=1000", "WORKER_THREADS=2"));
    char *tok = MINT(keys_dir);
    for (int round = 0; round < 2; round++) {
        pwt_response_t r = {0};
        pwt_assert_status(pwt_get(&manual_worker, "/readyz", &r), 503);
        pwt_response_free(&r);
        pwt_assert_status(post_token(&manual_worker, tok, "5001", &r), 503); /* not 401: the token may be fine */
        assert_rejection_headers_(__FILE__, __LINE__, &r);
        pwt_response_free(&r);
        assert_nothing_stored();
        if (round == 0)
            pwt_sleep_ms(2500); /* through a few failed fetches (backoff 1 s, 2 s) */
    }
    pwt_assert_status(pwt_get(&manual_worker, "/healthz", NULL), 200);
    char *log = pwt_worker_log(&manual_worker);
    if (strstr(log, "no keys yet") == NULL)
        pwt_fail(__FILE__, __LINE__, "the worker did not log its failed key fetches");
    free(log);
    assert_true(pwt_worker_alive(&manual_worker));
    int code = pwt_worker_stop(&manual_worker);
    assert_int_equal(code, 0);
    free(tok);
    free(url_env);
}

/*
 * The port opens only once the first key fetch has ended (or after 2 s): Cloud Run's default startup
 * probe sends pushes as soon as the port accepts a connection, and a push answered 503 for want of
 * keys waits for Pub/Sub's backoff (10 s and more). Here the key server takes 800 ms to answer; the
 * first push, sent as soon as the worker answers at all, is verified and stored.
 */
static void a_push_sent_as_soon_as_the_port_opens_finds_the_keys_loaded(void **state)
{
    (void)state;
    char dir[400];
    dir_with_key_a("slow-keys", dir, sizeof dir);
    char delay[450];
    snprintf(delay, sizeof delay, "%s/delay_ms", dir);
    if (pwt_write_text(delay, "800") != 0)
        fail_msg("cannot write %s", delay);
    if (jwks_start(&test_server, dir, "slow") != 0)
        fail_msg("the slow JWKS server did not start");
    long long t0 = pwt_now_ms();
    start_worker_unready(&manual_worker, PARAMS("PUBSUB_AUTH=verify", "PUBSUB_AUDIENCE=" AUD, "PUBSUB_SERVICE_ACCOUNT=" SA,
                                                test_server.url_env, "WORKER_THREADS=1"));
    long long t_open = pwt_now_ms() - t0;
    char *tok = MINT(keys_dir);
    expect_accepted(&manual_worker, tok, "5101");
    printf("# the port opened %lld ms after the start, with the key server answering after 800 ms\n", t_open);
    assert_int_equal(jwks_fetches(&test_server), 1);
    assert_int_equal(pwt_worker_stop(&manual_worker), 0);
    free(tok);
}

typedef struct {
    int n204, n401, n503, nother, nerr;
    long other_status;
} tally_t;

/* total POSTs of body with these headers to w, `concurrency` at a time (libcurl multi). */
static void burst(const pwt_worker_t *w, const char *body, const char *authz, int total, int concurrency, tally_t *t)
{
    memset(t, 0, sizeof *t);
    char url[160];
    snprintf(url, sizeof url, "%s/", w->base_url);
    char *h = pwt_xasprintf("Authorization: %s", authz);
    struct curl_slist *list = pwt_http_headers(PWT_LIST(h));
    CURLM *m = curl_multi_init();
    CURL **hs = calloc((size_t)concurrency, sizeof *hs);
    int started = 0, done = 0, running = 0;
    for (int i = 0; i < concurrency && started < total; i++, started++) {
        hs[i] = pwt_http_easy(url, 20000L, list);
        pwt_http_set_post(hs[i], body, strlen(body));
        curl_easy_setopt(hs[i], CURLOPT_WRITEFUNCTION, pwt_http_discard);
        curl_multi_add_handle(m, hs[i]);
    }
    while (done < total) {
        curl_multi_perform(m, &running);
        CURL *e;
        long status;
        CURLcode rc;
        while ((e = pwt_http_multi_done(m, &status, &rc)) != NULL) {
            if (status == 204)
                t->n204++;
            else if (status == 401)
                t->n401++;
            else if (status == 503)
                t->n503++;
            else if (status < 0)
                t->nerr++;
            else {
                t->nother++;
                t->other_status = status;
            }
            done++;
            if (started < total) {
                started++;
                curl_multi_add_handle(m, e); /* same options, the next request */
            }
        }
        if (done < total)
            curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    for (int i = 0; i < concurrency; i++) {
        if (hs[i] != NULL)
            curl_easy_cleanup(hs[i]);
    }
    free(hs);
    curl_multi_cleanup(m);
    curl_slist_free_all(list);
    free(h);
}

static void burst_of_1000_unknown_kid_pushes_is_all_401_or_503_with_at_most_one_fetch(void **state)
{
    (void)state;
    enum { MIN_REFRESH_MS = 3000 };
    char dir[400];
    dir_with_key_a("burst", dir, sizeof dir);
    if (jwks_start(&test_server, dir, "burst") != 0)
        fail_msg("JWKS server did not start");
    start_test_worker(&test_server, "JWKS_MIN_REFRESH_MS=3000", "WORKER_THREADS=4");
    long long loaded_at = pwt_now_ms();
    char *tok = MINT(other_dir, "--kid", KID_UNKNOWN);
    char *authz = pwt_xasprintf("Bearer %s", tok);
    char *body = sent_push("6001");
    /* A stale set, so the unknown kid does ask for a refetch: the rate limit is what is under test. */
    long long wait = loaded_at + MIN_REFRESH_MS + 200 - pwt_now_ms();
    if (wait > 0)
        pwt_sleep_ms((long)wait);

    int before = jwks_fetches(&test_server);
    long long t0 = pwt_now_ms();
    tally_t t;
    burst(&test_worker, body, authz, 1000, 32, &t);
    long long took = pwt_now_ms() - t0;
    fprintf(stderr, "burst: %d x 401, %d x 503, %d x 204, %d other (last %ld), %d transport errors, %lld ms\n", t.n401, t.n503,
            t.n204, t.nother, t.other_status, t.nerr, took);
    assert_int_equal(t.n204, 0);
    assert_int_equal(t.nother, 0);
    assert_int_equal(t.nerr, 0);
    assert_int_equal(t.n401 + t.n503, 1000);
    assert_true(t.n503 >= 1); /* the stale set made the first ones ask for a refetch */
    /* Past another JWKS_MIN_REFRESH_MS, so that a second (rate-limited) fetch they asked for would show too. */
    pwt_sleep_ms(MIN_REFRESH_MS + 700);
    int after = jwks_fetches(&test_server);
    fprintf(stderr, "burst: JWKS fetches before %d, after %d\n", before, after);
    if (took < MIN_REFRESH_MS && after - before > 1)
        pwt_fail(__FILE__, __LINE__, "a burst of unknown-kid pushes caused %d JWKS fetches (expected at most 1)", after - before);
    assert_true(after - before >= 1); /* and the refetch they asked for did happen */
    assert_nothing_stored();
    assert_true(pwt_worker_alive(&test_worker));
    free(body);
    free(authz);
    free(tok);
}

/* ---- claims mode (behind Cloud Run IAM, which strips the signature) ---------------------------------- */

static void claims_mode_accepts_stripped_signature_with_good_claims(void **state)
{
    (void)state;
    ensure_claims_worker();
    char *tok = MINT(keys_dir, "--signature", "SIGNATURE_REMOVED_BY_GOOGLE");
    expect_accepted(&claims_worker, tok, "7001");
    pwt_assert_rows(Q_EVENTS, SENT_EVENT("7001"));
    free(tok);
}

/*
 * exp = INT64_MAX is a token that never expires: every claim is valid, so it is accepted, and again from
 * the verified-token cache, whose expiry arithmetic (exp + skew) must saturate instead of overflowing
 * (the SANITIZE=1 worker aborts on signed overflow; cleanup_and_check_alive then fails the test).
 */
static void claims_mode_token_with_exp_int64_max_is_accepted_twice_without_overflow(void **state)
{
    (void)state;
    ensure_claims_worker();
    char *claims = pwt_xasprintf("{\"aud\":\"" AUD "\",\"azp\":\"1\",\"email\":\"" SA "\",\"email_verified\":true,"
                             "\"exp\":9223372036854775807,\"iat\":%lld,\"iss\":\"https://accounts.google.com\",\"sub\":\"1\"}",
                             (long long)time(NULL));
    char *tok = MINT(keys_dir, "--claims-json", claims, "--signature", "SIGNATURE_REMOVED_BY_GOOGLE");
    expect_accepted(&claims_worker, tok, "7201"); /* verified, then cached */
    expect_accepted(&claims_worker, tok, "7202"); /* from the cache */
    char *log = pwt_worker_log(&claims_worker);
    if (strstr(log, "runtime error") != NULL)
        pwt_fail(__FILE__, __LINE__, "the worker reported undefined behaviour");
    free(log);
    assert_true(pwt_worker_alive(&claims_worker));
    free(claims);
    free(tok);
}

static void claims_mode_rejects_stripped_token_with_wrong_audience_401(void **state)
{
    (void)state;
    ensure_claims_worker();
    char *tok = MINT(keys_dir, "--signature", "SIGNATURE_REMOVED_BY_GOOGLE", "--aud", AUD "/");
    pwt_response_t r = {0};
    pwt_assert_status(post_token(&claims_worker, tok, "7002", &r), 401);
    assert_rejection_headers_(__FILE__, __LINE__, &r);
    pwt_response_free(&r);
    assert_nothing_stored();
    free(tok);
}

static void claims_mode_rejects_a_signed_token_401(void **state)
{
    (void)state;
    ensure_claims_worker();
    char *tok = MINT(keys_dir); /* a real RS256 signature, not the literal Cloud Run puts there */
    pwt_response_t r = {0};
    pwt_assert_status(post_token(&claims_worker, tok, "7003", &r), 401);
    assert_rejection_headers_(__FILE__, __LINE__, &r);
    pwt_response_free(&r);
    assert_nothing_stored();
    free(tok);
}

/* ---- the verified-token cache ---------------------------------------------------------------------- */

static void same_token_for_200_pushes_is_accepted_every_time(void **state)
{
    (void)state;
    char *tok = MINT(keys_dir, "--exp-in", "3000");
    for (int i = 0; i < 200; i++) {
        char id[16];
        snprintf(id, sizeof id, "%d", 8000 + i);
        pwt_assert_status(post_token(&worker, tok, id, NULL), 204);
    }
    assert_int_equal(pwt_scalar_int("SELECT count(*) FROM pubsub_receipts WHERE outcome = 'stored'"), 200);
    assert_int_equal(pwt_scalar_int("SELECT count(DISTINCT message_id) FROM pubsub_receipts"), 200);
    assert_int_equal(pwt_scalar_int("SELECT count(*) FROM status_events"), 1); /* one status, redelivered */
    pwt_assert_rows(Q_LOGS, SENT_LOG);
    /* A cached token still has to match exactly: one changed byte is verified afresh and fails. */
    char *sig = last_part(tok);
    sig[10] = sig[10] == 'A' ? 'B' : 'A';
    pwt_truncate_all();
    expect_token_rejected(tok, 401);
    free(tok);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, fresh_tables, cleanup_and_check_alive)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(valid_token_is_accepted_and_the_push_stored_exactly),
        T(bearer_scheme_is_case_insensitive),
        T(issuer_without_https_scheme_is_accepted),
        T(token_expired_30s_ago_is_accepted_within_60s_skew),
        T(token_issued_30s_in_the_future_is_accepted_within_skew),

        T(alg_none_with_empty_signature_is_401),
        T(hs256_keyed_with_the_public_key_is_401),
        T(es256_header_is_401_even_with_a_valid_rs256_signature),
        T(unknown_kid_with_a_fresh_key_set_is_401_and_fetches_nothing),
        T(signature_by_another_key_with_the_same_kid_is_401),
        T(truncated_signature_is_401),
        T(token_cut_to_header_and_claims_is_401),
        T(padded_base64_signature_is_401),
        T(standard_base64_alphabet_in_signature_is_401),
        T(oversized_token_over_8192_bytes_is_401),

        T(expired_beyond_60s_skew_is_401),
        T(issued_in_the_future_beyond_skew_is_401),
        T(nbf_in_the_future_beyond_skew_is_401),
        T(wrong_issuer_is_401),
        T(wrong_audience_is_401),
        T(audience_differing_only_in_case_is_401),
        T(audience_with_a_trailing_slash_added_is_401),
        T(token_of_another_service_account_is_403),
        T(email_verified_false_is_401),

        T(basic_scheme_is_401),
        T(raw_token_without_bearer_scheme_is_401),
        T(missing_authorization_header_is_401),
        T(bearer_without_token_is_401),

        T(rotated_in_key_is_fetched_once_and_its_token_accepted),
        T(jwks_server_failing_or_gone_keeps_the_cached_keys),
        T(without_any_keys_readyz_and_pushes_are_503_and_the_worker_survives),
        T(a_push_sent_as_soon_as_the_port_opens_finds_the_keys_loaded),
        T(burst_of_1000_unknown_kid_pushes_is_all_401_or_503_with_at_most_one_fetch),
        T(cached_token_is_401_once_its_key_leaves_the_key_set),
        T(keys_past_the_stale_limit_are_dropped_and_pushes_503_until_a_fetch_succeeds),
        T(service_account_any_accepts_every_account_and_warns),

        T(claims_mode_accepts_stripped_signature_with_good_claims),
        T(claims_mode_token_with_exp_int64_max_is_accepted_twice_without_overflow),
        T(claims_mode_rejects_stripped_token_with_wrong_audience_401),
        T(claims_mode_rejects_a_signed_token_401),

        T(same_token_for_200_pushes_is_accepted_every_time),
    };
    return cmocka_run_group_tests_name("auth", tests, group_setup, group_teardown);
}
