/* Unit tests for worker/log.c: every line is one valid JSON object of valid UTF-8, however long its parts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto/pw_json.h"
#include "worker/log.h"

#ifndef PW_LOG_LINE_MAX /* (headers before the limit was named) */
#define PW_LOG_LINE_MAX 4096
#endif

/* Runs pw_log with stderr sent to a temporary file; returns what was written (malloc'd). */
static char *capture(const char *extra_json, const char *message)
{
    char path[] = "/tmp/pw-log-test.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    pw_log(PW_LOG_WARNING, extra_json, "%s", message);
    dup2(saved, STDERR_FILENO);
    close(saved);
    off_t n = lseek(fd, 0, SEEK_END);
    char *out = calloc(1, (size_t)n + 1);
    assert_int_equal(pread(fd, out, (size_t)n, 0), n);
    close(fd);
    return out;
}

/* Asserts that line is one JSON object ending in a newline, of valid UTF-8, at most PW_LOG_LINE_MAX bytes; returns it parsed. */
static json_object *assert_valid_line(const char *line)
{
    size_t n = strlen(line);
    if (n == 0 || n > PW_LOG_LINE_MAX || line[n - 1] != '\n' || memchr(line, '\n', n - 1) != NULL)
        fail_msg("not one line of at most %d bytes (%zu bytes): %.200s", PW_LOG_LINE_MAX, n, line);
    if (pw_json_utf8_invalid_at(line, n) != n)
        fail_msg("invalid UTF-8 at byte %zu of: %.300s", pw_json_utf8_invalid_at(line, n), line);
    json_tokener *tok = json_tokener_new();
    json_object *o = json_tokener_parse_ex(tok, line, (int)n - 1);
    enum json_tokener_error e = json_tokener_get_error(tok);
    json_tokener_free(tok);
    if (o == NULL || e != json_tokener_success || !json_object_is_type(o, json_type_object))
        fail_msg("not a JSON object (%s): ...%s", json_tokener_error_desc(e), line + (n > 300 ? n - 300 : 0));
    return o;
}

static const char *member_string(json_object *o, const char *key)
{
    json_object *v;
    assert_true(json_object_object_get_ex(o, key, &v));
    return json_object_get_string(v);
}

/* A message of escapes and multi-byte characters longer than a line: cut at a whole piece, still JSON. */
static void test_long_message_is_cut_at_a_whole_escape_or_character(void **state)
{
    (void)state;
    for (int shift = 0; shift < 6; shift++) { /* each offset of the pieces relative to the cut */
        char msg[1024];
        size_t n = 0;
        for (int i = 0; i < shift; i++)
            msg[n++] = 'a';
        while (n + 4 < sizeof msg) {
            static const char pieces[] = "\"\x01\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\\";
            memcpy(msg + n, pieces, sizeof pieces - 1 < sizeof msg - 1 - n ? sizeof pieces - 1 : sizeof msg - 1 - n);
            n += sizeof pieces - 1 < sizeof msg - 1 - n ? sizeof pieces - 1 : sizeof msg - 1 - n;
        }
        msg[n] = '\0';
        char extra[3000];
        memset(extra, 0, sizeof extra);
        snprintf(extra, sizeof extra, "\"pad\":\"%0*d\"", (int)(2900 - 200 * shift), 7);
        char *line = capture(extra, msg);
        json_object *o = assert_valid_line(line);
        assert_true(strlen(member_string(o, "message")) > 0);
        json_object_put(o);
        free(line);
    }
}

/* Members too long for the line are dropped as a whole and said to be, rather than cut into invalid JSON. */
static void test_members_too_long_are_dropped_not_cut(void **state)
{
    (void)state;
    char *extra = malloc(PW_LOG_LINE_MAX + 100);
    snprintf(extra, PW_LOG_LINE_MAX + 100, "\"userAgent\":\"%0*d\"", PW_LOG_LINE_MAX, 1);
    char *line = capture(extra, "push rejected");
    json_object *o = assert_valid_line(line);
    assert_string_equal(member_string(o, "message"), "push rejected");
    json_object *v;
    assert_true(json_object_object_get_ex(o, "logTruncated", &v));
    assert_true(json_object_get_boolean(v));
    json_object_put(o);
    free(line);
    free(extra);
}

/* Members that fit are kept whole; the message is what gets shorter. */
static void test_members_that_fit_are_kept(void **state)
{
    (void)state;
    char msg[1024];
    memset(msg, 'm', sizeof msg - 1);
    msg[sizeof msg - 1] = '\0';
    char extra[3600];
    snprintf(extra, sizeof extra, "\"status\":503,\"path\":\"%0*d\"", 3400, 5);
    char *line = capture(extra, msg);
    json_object *o = assert_valid_line(line);
    json_object *v;
    assert_true(json_object_object_get_ex(o, "status", &v));
    assert_int_equal(json_object_get_int(v), 503);
    assert_int_equal(strlen(member_string(o, "path")), 3400);
    assert_false(json_object_object_get_ex(o, "logTruncated", &v));
    json_object_put(o);
    free(line);
}

/* pw_log_escape: never half an escape or half a character, and non-UTF-8 bytes become U+FFFD. */
static void test_escape_cuts_whole_pieces(void **state)
{
    (void)state;
    char out[16];
    assert_string_equal(pw_log_escape("ab\"cd", out, 4), "ab"); /* \" needs 2 bytes + NUL */
    assert_string_equal(pw_log_escape("a\x01", out, 7), "a");   /* \u0001 needs 6 */
    assert_string_equal(pw_log_escape("a\x01", out, 8), "a\\u0001");
    assert_string_equal(pw_log_escape("a\xe2\x82\xac", out, 4), "a"); /* the euro sign needs 3 */
    assert_string_equal(pw_log_escape("a\xe2\x82\xac", out, 5), "a\xe2\x82\xac");
    assert_string_equal(pw_log_escape("\xe2\x82x", out, sizeof out), "\\ufffd\\ufffdx"); /* a character cut short */
    assert_string_equal(pw_log_escape("\xc0\xaf", out, sizeof out), "\\ufffd\\ufffd");   /* overlong */
    char big[32];
    assert_string_equal(pw_log_escape("\xed\xa0\x80", big, sizeof big), "\\ufffd\\ufffd\\ufffd"); /* a surrogate */
    assert_string_equal(pw_log_escape("\xed\xa0\x80", out, sizeof out), "\\ufffd\\ufffd");         /* cut: 2 whole escapes */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_long_message_is_cut_at_a_whole_escape_or_character),
        cmocka_unit_test(test_members_too_long_are_dropped_not_cut),
        cmocka_unit_test(test_members_that_fit_are_kept),
        cmocka_unit_test(test_escape_cuts_whole_pieces),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
