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

/**
 * The fast part of pw_base64_decode, for a caller that does not know where its text ends: decodes
 * whole groups of 4 standard-alphabet characters from the start of in (at most n), 3 bytes each,
 * and stops before the first group that holds any other byte ('=' padding, a quote, anything).
 * Returns the characters decoded (a multiple of 4); *outlen receives n_decoded / 4 * 3. out must
 * hold n / 4 * 3 bytes. The rest (a padded last group) is the caller's, with pw_base64_decode.
 */
size_t pw_base64_decode_groups(const char *in, size_t n, unsigned char *out, size_t *outlen);

#endif
