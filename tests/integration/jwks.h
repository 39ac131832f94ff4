/* OIDC keys for integration tests: scripts/mint-token (keys, tokens) and JWKS servers run as child processes. */
#ifndef PWT_JWKS_H
#define PWT_JWKS_H

#include <stddef.h>
#include <sys/types.h>

/* ---- scripts/mint-token ---------------------------------------------------------------------------- */

/* Finds scripts/mint-token (from PW_FIXTURES) and sends its stderr to err_path from now on. 0, or -1 printed. */
int pwt_mint_init(const char *err_path);

/* The path of scripts/mint-token (after pwt_mint_init). Borrowed. */
const char *pwt_mint_path(void);

/* `mint-token keygen dir --kid kid`: 0, or -1 with mint-token's stderr printed. */
int pwt_mint_keygen(const char *dir, const char *kid);

/* `mint-token sign dir <args>` (args NULL-terminated): the token, malloc'd. Fails the test at file:line when mint-token fails. */
char *pwt__mint_sign(const char *file, int line, const char *dir, const char *const *args);

/* ---- JWKS servers ---------------------------------------------------------------------------------- */

typedef struct {
    pid_t pid; /* also its process group; 0 when not running */
    int port;
    char dir[400];      /* what it serves: dir/jwks.json */
    char log_path[450]; /* its stdout and stderr ("jwks-request GET /path 200" per request) */
    char url_env[128];  /* "OIDC_JWKS_URL=http://127.0.0.1:PORT/oauth2/v3/certs" */
} pwt_jwks_server_t;

/**
 * Starts a server of dir on port (0: a free one, up to 3 attempts) in its own process group: cmd (NULL: `mint-token serve`;
 * else e.g. {"python3", "script.py", NULL}) followed by dir, the port and opts (NULL-terminated, may be NULL). Output is appended
 * to log_prefix-PORT.log. Waits up to 10 s for "listening" in that log. 0, or -1 with the log printed.
 */
int pwt_jwks_start(pwt_jwks_server_t *s, const char *const *cmd, const char *dir, int port, const char *const *opts,
                   const char *log_prefix);

/* SIGTERM to its group, SIGKILL after 3 s. Safe to call twice. */
void pwt_jwks_stop(pwt_jwks_server_t *s);

/* Stops every server still running (for atexit). */
void pwt_jwks_stop_all(void);

/* SIGKILLs every server's group at once, with async-signal-safe calls only (for fatal-signal handlers). */
void pwt_jwks_kill_all_now(void);

/* Occurrences of what in the server's log so far (e.g. "jwks-request": the requests it answered). */
int pwt_jwks_count(const pwt_jwks_server_t *s, const char *what);

/* Waits up to timeout_ms for at least n occurrences of what in the server's log; returns the count seen. */
int pwt_jwks_wait_count(const pwt_jwks_server_t *s, const char *what, int n, long timeout_ms);

#endif
