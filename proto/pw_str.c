/* The shared error helper of the proto layer. */
#include "pw_str.h"

#include <stdarg.h>
#include <stdio.h>

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
