/* Strict JSON parsing and null-aware member access on top of json-c. */
#include "pw_json.h"

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

int pw_json_parse_strict(const char *s, size_t len, json_object **out, char *err, size_t errlen)
{
    json_tokener *tok;
    json_object *o;
    enum json_tokener_error e;
    int rc;

    *out = NULL;
    /* json-c accepts more than RFC 8259 even when strict (NaN, Infinity, "1.", raw control
       characters in strings): the scanner checks the grammar first. Unpaired surrogate escapes
       pass (json-c stores U+FFFD, as pw_jscan_unescape does). */
    if ((rc = pw_json_validate(s, len, NULL, err, errlen)) != 0)
        return rc;
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
