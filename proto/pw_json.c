/* Strict JSON parsing and null-aware member access on top of json-c. */
#include "pw_json.h"

#include "jscan.h"

#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <stdio.h>
#include <stdlib.h>

/* Describes a tokener failure; a depth error gets its own words because it is the likely attack. */
static int parse_error(enum json_tokener_error e, size_t offset, char *err, size_t errlen)
{
    if (e == json_tokener_error_depth)
        return pw_set_err(err, errlen, PW_EINVAL, "nesting too deep (over %d levels)", PW_JSON_MAX_DEPTH);
    return pw_set_err(err, errlen, PW_EINVAL, "invalid JSON at offset %zu: %s", offset, json_tokener_error_desc(e));
}

static int is_blank(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
            return 0;
    return 1;
}

/*
 * The offset of the first byte that is not well-formed UTF-8 (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF), or len. json-c's VALIDATE_UTF8 checks only the shape of a
 * sequence and lets "\xc0\xaf" and encoded surrogates through, which PostgreSQL then refuses.
 */
size_t pw_json_utf8_invalid_at(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        /* ASCII, eight bytes at a time: most of a push is. */
        while (i + 8 <= len) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ULL)
                break;
            i += 8;
        }
        if (i >= len)
            break;
        unsigned char c = s[i];
        size_t n;
        unsigned char lo = 0x80, hi = 0xbf; /* the allowed range of the second byte */
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            lo = c == 0xe0 ? 0xa0 : 0x80; /* E0 80..9F would be overlong */
            hi = c == 0xed ? 0x9f : 0xbf; /* ED A0..BF are the surrogates */
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            lo = c == 0xf0 ? 0x90 : 0x80; /* F0 80..8F would be overlong */
            hi = c == 0xf4 ? 0x8f : 0xbf; /* F4 90.. is above U+10FFFF */
        } else {
            return i; /* a continuation byte, C0/C1 (always overlong) or F5..FF */
        }
        if (len - i <= n || s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t k = 2; k <= n; k++)
            if ((s[i + k] & 0xc0) != 0x80)
                return i;
        i += n + 1;
    }
    return len;
}

int pw_json_parse_strict(const char *s, size_t len, json_object **out, char *err, size_t errlen)
{
    json_tokener *tok;
    json_object *o;
    enum json_tokener_error e;
    size_t bad;
    int rc = 0;

    *out = NULL;
    if (len > INT_MAX)
        return pw_set_err(err, errlen, PW_ETOOBIG, "JSON input of %zu bytes is over the parser's limit", len);
    if (is_blank(s, len))
        return pw_set_err(err, errlen, PW_EINVAL, "empty JSON input");
    if ((bad = pw_json_utf8_invalid_at(s, len)) != len)
        return pw_set_err(err, errlen, PW_EINVAL, "invalid JSON at offset %zu: invalid UTF-8", bad);
    /* json-c accepts more than RFC 8259 even when strict (NaN, Infinity, "1.", raw control
       characters in strings): the scanner checks the grammar first. Unpaired surrogate escapes
       pass (json-c stores U+FFFD; the worker keeps such a push as a dead letter as well). */
    pw_jscan_t sc;
    pw_jval_t v;
    pw_jscan_init(&sc, s, len, PW_JSON_MAX_DEPTH);
    sc.lone_surrogates_ok = 1;
    if (pw_jscan_value(&sc, &v) != 0 || pw_jscan_end(&sc) != 0) {
        if (sc.why != NULL && strcmp(sc.why, "nesting too deep") == 0)
            return pw_set_err(err, errlen, PW_EINVAL, "nesting too deep (over %d levels)", PW_JSON_MAX_DEPTH);
        return pw_set_err(err, errlen, PW_EINVAL, "invalid JSON at offset %zu: %s", sc.at,
                          sc.why != NULL ? sc.why : "unexpected character");
    }
    if ((tok = json_tokener_new_ex(PW_JSON_MAX_DEPTH)) == NULL) {
        fprintf(stderr, "%s:%d: out of memory\n", __FILE__, __LINE__);
        abort();
    }
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);

    o = json_tokener_parse_ex(tok, s, (int)len);
    e = json_tokener_get_error(tok);
    if (e == json_tokener_continue) {
        /* A top-level scalar ("123") only ends at a delimiter, and truncated input looks the same:
           one NUL byte tells them apart (it completes a scalar, and fails anything unfinished). */
        o = json_tokener_parse_ex(tok, "", 1);
        e = json_tokener_get_error(tok);
        if (e != json_tokener_success) {
            rc = parse_error(e, len, err, errlen);
            goto out;
        }
    } else if (e != json_tokener_success) {
        rc = parse_error(e, json_tokener_get_parse_end(tok), err, errlen);
        goto out;
    } else if (json_tokener_get_parse_end(tok) != len) {
        /* STRICT already refuses trailing characters, but a NUL byte ends the parse silently. */
        rc = pw_set_err(err, errlen, PW_EINVAL, "invalid JSON at offset %zu: trailing data after the value",
                        json_tokener_get_parse_end(tok));
        goto out;
    }
    *out = o;
    o = NULL;
out:
    json_object_put(o);
    json_tokener_free(tok);
    return rc;
}

json_object *pw_json_member(json_object *o, const char *key)
{
    json_object *v = NULL;
    if (!json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v))
        return NULL;
    return v;
}

pw_str_t pw_json_str(json_object *v)
{
    if (!json_object_is_type(v, json_type_string))
        return PW_STR_NULL;
    return pw_str(json_object_get_string(v), (size_t)json_object_get_string_len(v));
}
