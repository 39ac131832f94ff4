/* Strict JSON parsing (the one place proto/ calls the json-c tokener) and null-aware member access. */
#ifndef PW_JSON_H
#define PW_JSON_H

#include <json-c/json.h>

#include "jscan.h" /* PW_JSON_MAX_DEPTH, pw_json_validate, pw_json_utf8_invalid_at */
#include "pw_str.h"

/**
 * Parses exactly len bytes (need not be NUL-terminated) as one JSON value: strict syntax, valid
 * UTF-8, nesting <= PW_JSON_MAX_DEPTH, nothing but whitespace after the value. On success *out
 * is a new reference (release with json_object_put). Returns 0, PW_EINVAL ("invalid JSON at
 * offset 12: unexpected character", "nesting too deep (over 64 levels)", "empty JSON input") or
 * PW_ETOOBIG (len over INT_MAX, the tokener's limit). Thread-safe (one tokener per call).
 */
int pw_json_parse_strict(const char *s, size_t len, json_object **out, char *err, size_t errlen);

/* The value of o[key], borrowed; NULL when o is not an object, the key is absent or it is JSON null
   (json_object_object_get_ex reports a null member as found with a NULL value). */
json_object *pw_json_member(json_object *o, const char *key);

/* v as a slice when it is a JSON string (length-aware: strings may hold NUL); else PW_STR_NULL. */
pw_str_t pw_json_str(json_object *v);

#endif
