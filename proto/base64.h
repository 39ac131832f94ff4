/* Strict base64 (RFC 4648 section 4, standard alphabet, padded) and base64url (section 5, unpadded). */
#ifndef PW_BASE64_H
#define PW_BASE64_H

#include <stddef.h>

/* Upper bound of the decoded size of len input characters. */
size_t pw_base64_decoded_max(size_t len);

/**
 * Decodes standard base64: alphabet A-Z a-z 0-9 + /, length a multiple of 4, '=' padding only at
 * the end (at most two), canonical trailing bits (unused bits zero), no whitespace.
 * out must hold pw_base64_decoded_max(len) bytes; *outlen receives the decoded length.
 * Returns 0, or PW_EINVAL with the offending position in err ("invalid base64 character '%' at 17").
 */
int pw_base64_decode(const char *in, size_t len, unsigned char *out, size_t *outlen, char *err, size_t errlen);

/**
 * Decodes base64url as JWT uses it: alphabet A-Z a-z 0-9 - _, no padding ('=' rejected),
 * len % 4 != 1, canonical trailing bits. Same buffer contract and errors as pw_base64_decode.
 */
int pw_base64url_decode(const char *in, size_t len, unsigned char *out, size_t *outlen, char *err, size_t errlen);

#endif
