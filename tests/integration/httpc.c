/* libcurl pieces for tests that send requests themselves: many at once (curl multi), quietly, or to servers other than a worker. */
#include "tests/integration/httpc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/integration/util.h"

struct curl_slist *pwt_http_headers(const char *const *extra)
{
    struct curl_slist *list = curl_slist_append(NULL, "Content-Type: application/json");
    list = curl_slist_append(list, "Expect:");
    for (size_t i = 0; extra != NULL && extra[i] != NULL; i++)
        list = curl_slist_append(list, extra[i]);
    return list;
}

CURL *pwt_http_easy(const char *url, long timeout_ms, struct curl_slist *headers)
{
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    if (headers != NULL)
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    return c;
}

void pwt_http_set_post(CURL *c, const void *body, size_t len)
{
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
}

size_t pwt_http_discard(char *data, size_t size, size_t nmemb, void *userdata)
{
    (void)data;
    (void)userdata;
    return size * nmemb;
}

long pwt_http_perform(CURL *c)
{
    long status = -1;
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    return status;
}

long pwt_http_request(const char *method, const char *url, const char *body, const char *const *extra, long timeout_ms, char **out)
{
    struct curl_slist *headers = pwt_http_headers(extra);
    CURL *c = pwt_http_easy(url, timeout_ms, headers);
    char *answer = NULL;
    size_t answer_len = 0;
    FILE *mem = open_memstream(&answer, &answer_len);
    if (strcmp(method, "POST") != 0 && strcmp(method, "GET") != 0)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body != NULL)
        pwt_http_set_post(c, body, strlen(body));
    curl_easy_setopt(c, CURLOPT_WRITEDATA, mem);
    long status = pwt_http_perform(c);
    curl_slist_free_all(headers);
    curl_easy_cleanup(c);
    fclose(mem);
    if (out != NULL)
        *out = answer;
    else
        free(answer);
    return status;
}

CURL *pwt_http_multi_done(CURLM *multi, long *status, CURLcode *result)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *e = msg->easy_handle;
        *result = msg->data.result;
        *status = -1;
        if (*result == CURLE_OK)
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, status);
        curl_multi_remove_handle(multi, e);
        return e;
    }
    return NULL;
}

void *pwt_http_private(CURL *c)
{
    char *priv = NULL;
    curl_easy_getinfo(c, CURLINFO_PRIVATE, &priv);
    return priv;
}
