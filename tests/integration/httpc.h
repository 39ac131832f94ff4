/* libcurl pieces for tests that send requests themselves: many at once (curl multi), quietly, or to servers other than a worker. */
#ifndef PWT_HTTPC_H
#define PWT_HTTPC_H

#include <stddef.h>

#include <curl/curl.h>

/* "Content-Type: application/json" and "Expect:" (no 100-continue wait), then extra (NULL-terminated, may be NULL). */
struct curl_slist *pwt_http_headers(const char *const *extra);

/* An easy handle for url: no proxy, no signals, the whole transfer within timeout_ms, headers (may be NULL; borrowed). */
CURL *pwt_http_easy(const char *url, long timeout_ms, struct curl_slist *headers);

/* Makes c a POST of body (len bytes; borrowed until the transfer ends). */
void pwt_http_set_post(CURL *c, const void *body, size_t len);

/* A CURLOPT_WRITEFUNCTION that drops what it is given. */
size_t pwt_http_discard(char *data, size_t size, size_t nmemb, void *userdata);

/* Performs c: the HTTP status, or -1 when no answer came. */
long pwt_http_perform(CURL *c);

/**
 * One quiet request: method ("GET", "POST", "PUT"...) to url with body (NULL: none) and pwt_http_headers(extra), within
 * timeout_ms. The status (-1: no answer); the answer's body into *out when not NULL (malloc'd, "" when none).
 */
long pwt_http_request(const char *method, const char *url, const char *body, const char *const *extra, long timeout_ms, char **out);

/* The next finished transfer of multi, already removed from it (the caller cleans it up), its HTTP status in *status (-1: no
 * answer; *result says why); NULL when no other transfer has finished. */
CURL *pwt_http_multi_done(CURLM *multi, long *status, CURLcode *result);

/* c's CURLOPT_PRIVATE pointer. */
void *pwt_http_private(CURL *c);

#endif
