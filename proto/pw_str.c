/* The shared error helper of the proto layer. */
#include "pw_str.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void *pw__proto_xrealloc(void *p, size_t n, const char *file, int line)
{
    if ((p = realloc(p, n > 0 ? n : 1)) == NULL) {
        fprintf(stderr, "%s:%d: out of memory (%zu bytes)\n", file, line, n);
        abort();
    }
    return p;
}

int pw_set_err(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

const char *pw_strerror(int code)
{
    switch (code) {
    case PW_OK:
        return "ok";
    case PW_EINVAL:
        return "malformed input";
    case PW_ERANGE:
        return "value out of range";
    case PW_ETOOBIG:
        return "input too large";
    case PW_EUNSUPP:
        return "unsupported format";
    default:
        return "unknown error";
    }
}
