/* Integration-test harness: a fresh database, the real worker as a child process, HTTP over libcurl, row checks over libpq. */
#include "tests/integration/harness.h"
#include "tests/integration/httpc.h"
#include "tests/integration/proc.h"
#include "tests/integration/util.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <json-c/json.h>
#include <libpq-fe.h>
#include <openssl/evp.h>

extern char **environ;

#define PWT_MAX_WORKERS 16
#define PWT_READY_TIMEOUT_MS 15000
#define PWT_STOP_TIMEOUT_MS 10000
#define PWT_HTTP_TIMEOUT_MS 30000
#define PWT_LOG_TAIL_LINES 40
#define PWT_METRIC_POLLS 400   /* pwt_wait_metric: 400 polls 50 ms apart, 20 s */
#define PWT_METRIC_POLL_MS 50
/* Every checking connection: timestamptz printed in UTC whatever TZ/PGTZ say, ISO dates, floats printed exactly. */
#define CHECKER_SETTINGS "SET TIME ZONE 'UTC'; SET DateStyle = 'ISO, YMD'; SET extra_float_digits = 1"

/* The tables the worker writes, in dump order. */
static const char *const worker_tables[] = {
    "message_logs", "status_events", "inbound_messages", "contacts", "pubsub_receipts", "dead_letters", NULL,
};

static PGconn *checker;        /* to the test database, time zone UTC */
static char db_name[64];       /* "pwt_<name>_<pid>" */
static char db_conninfo[2048]; /* conninfo of the test database */
/* What workers get as DATABASE_URL: db_conninfo, or the same database through the pooler at
   PW_TEST_POOLER_URL (tests/run sets it for its PgBouncer pass; workers then get DB_POOLER=transaction). */
static char worker_conninfo[2048];
static char log_dir[256];      /* where worker logs go; "" until first needed */
static int keep_logs;          /* set when a check failed, or PWT_KEEP_LOGS=1 */
static int log_seq;            /* numbers the log files */
static void *live_workers[PWT_MAX_WORKERS]; /* pwt_worker_t *: the running workers (pwt_slots_track) */

/* ---- small helpers ----------------------------------------------------------------------------- */

/* A growable byte buffer, always NUL-terminated. */
typedef struct {
    char *p;
    size_t len, cap;
} buf_t;

static void buf_append(buf_t *b, const void *data, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->p = pwt_xrealloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_puts(buf_t *b, const char *s)
{
    buf_append(b, s, strlen(s));
}

static char *buf_take(buf_t *b)
{
    if (b->p == NULL)
        return pwt_xstrdup("");
    char *p = b->p;
    b->p = NULL;
    b->len = b->cap = 0;
    return p;
}

static const char *env_or_die(const char *name)
{
    const char *v = getenv(name);
    if (v == NULL || *v == '\0') {
        fprintf(stderr, "harness: %s is not set (tests/run sets it)\n", name);
        return NULL;
    }
    return v;
}

static void print_all_worker_logs(void)
{
    for (int i = 0; i < PWT_MAX_WORKERS; i++)
        if (live_workers[i] != NULL)
            pwt_worker_print_log(live_workers[i], PWT_LOG_TAIL_LINES);
}

void pwt_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "\n%s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    print_all_worker_logs();
    keep_logs = 1;
    _fail(file, line);
}

#define FAIL(...) pwt_fail(__FILE__, __LINE__, __VA_ARGS__)

/* ---- the database ------------------------------------------------------------------------------ */

/* Appends key='value' to b, escaping as libpq's conninfo syntax wants. */
static void conninfo_append(buf_t *b, const char *key, const char *val)
{
    if (b->len > 0)
        buf_puts(b, " ");
    buf_puts(b, key);
    buf_puts(b, "='");
    for (const char *s = val; *s; s++) {
        if (*s == '\'' || *s == '\\')
            buf_append(b, "\\", 1);
        buf_append(b, s, 1);
    }
    buf_puts(b, "'");
}

/* The admin conninfo with dbname replaced, into out. */
static int conninfo_for_db(const char *admin, const char *dbname, char *out, size_t outlen)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(admin, &err);
    if (opts == NULL) {
        fprintf(stderr, "harness: cannot parse PW_TEST_DATABASE_URL: %s\n", err ? err : "?");
        PQfreemem(err);
        return -1;
    }
    buf_t b = {0};
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++)
        if (o->val != NULL && *o->val != '\0' && strcmp(o->keyword, "dbname") != 0)
            conninfo_append(&b, o->keyword, o->val);
    conninfo_append(&b, "dbname", dbname);
    PQconninfoFree(opts);
    int ok = b.len < outlen;
    if (ok)
        memcpy(out, b.p, b.len + 1);
    free(b.p);
    return ok ? 0 : -1;
}

static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static int admin_exec(const char *sql)
{
    const char *admin = env_or_die("PW_TEST_DATABASE_URL");
    if (admin == NULL)
        return -1;
    PGconn *c = PQconnectdb(admin);
    PQsetNoticeProcessor(c, ignore_notice, NULL); /* "database ... does not exist, skipping" */
    int rc = 0;
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "harness: cannot connect to PW_TEST_DATABASE_URL: %s", PQerrorMessage(c));
        rc = -1;
    } else {
        PGresult *r = PQexec(c, sql);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            fprintf(stderr, "harness: %s: %s", sql, PQerrorMessage(c));
            rc = -1;
        }
        PQclear(r);
    }
    PQfinish(c);
    return rc;
}

static int ensure_log_dir(void)
{
    if (log_dir[0] != '\0')
        return 0;
    const char *tmp = getenv("TMPDIR");
    snprintf(log_dir, sizeof log_dir, "%s/pwt-logs-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (mkdtemp(log_dir) == NULL) {
        fprintf(stderr, "harness: mkdtemp %s: %s\n", log_dir, strerror(errno));
        log_dir[0] = '\0';
        return -1;
    }
    return 0;
}

int pwt_db_create(const char *name)
{
    const char *admin = env_or_die("PW_TEST_DATABASE_URL");
    if (admin == NULL || env_or_die("PW_WORKER") == NULL || env_or_die("PW_FIXTURES") == NULL)
        return -1;
    if (getenv("PWT_KEEP_LOGS") != NULL && strcmp(getenv("PWT_KEEP_LOGS"), "1") == 0)
        keep_logs = 1;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (ensure_log_dir() != 0)
        return -1;

    /* Database names: lower-case letters, digits and '_' only, so no quoting surprises. */
    char clean[32];
    size_t j = 0;
    for (const char *s = name; *s && j < sizeof clean - 1; s++)
        clean[j++] = (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ? *s : '_';
    clean[j] = '\0';
    snprintf(db_name, sizeof db_name, "pwt_%s_%ld", clean, (long)getpid());

    char sql[256];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", db_name);
    if (admin_exec(sql) != 0)
        return -1;
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", db_name);
    if (admin_exec(sql) != 0)
        return -1;
    const char *pooler = getenv("PW_TEST_POOLER_URL");
    if (conninfo_for_db(pooler != NULL && *pooler != '\0' ? pooler : admin, db_name, worker_conninfo, sizeof worker_conninfo) != 0)
        return -1;
    if (conninfo_for_db(admin, db_name, db_conninfo, sizeof db_conninfo) != 0)
        return -1;

    checker = PQconnectdb(db_conninfo);
    if (PQstatus(checker) != CONNECTION_OK) {
        fprintf(stderr, "harness: cannot connect to %s: %s", db_name, PQerrorMessage(checker));
        return -1;
    }
    PGresult *r = PQexec(checker, CHECKER_SETTINGS);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    return ok ? 0 : -1;
}

void pwt_db_drop(void)
{
    for (int i = 0; i < PWT_MAX_WORKERS; i++)
        if (live_workers[i] != NULL)
            pwt_worker_stop(live_workers[i]);
    if (checker != NULL) {
        PQfinish(checker);
        checker = NULL;
    }
    if (db_name[0] != '\0') {
        char sql[256];
        snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", db_name);
        admin_exec(sql);
        db_name[0] = '\0';
    }
    if (log_dir[0] != '\0') {
        if (keep_logs) {
            fprintf(stderr, "harness: worker logs kept in %s\n", log_dir);
        } else {
            if (pwt_rm_rf(log_dir) != 0)
                fprintf(stderr, "harness: could not remove %s\n", log_dir);
        }
        log_dir[0] = '\0';
    }
    curl_global_cleanup();
}

const char *pwt_db_url(void)
{
    return db_conninfo;
}

/* ---- child processes --------------------------------------------------------------------------- */

/* environ, minus the names set in extra, plus extra. The array is malloc'd; its strings are borrowed. */
static char **child_env(const char *const *extra)
{
    size_t n_env = 0, n_extra = 0;
    while (environ[n_env] != NULL)
        n_env++;
    while (extra[n_extra] != NULL)
        n_extra++;
    char **envp = pwt_xmalloc((n_env + n_extra + 1) * sizeof *envp);
    size_t k = 0;
    for (size_t i = 0; i < n_env; i++) {
        int overridden = 0;
        for (size_t e = 0; e < n_extra && !overridden; e++) {
            const char *eq = strchr(extra[e], '=');
            size_t namelen = eq ? (size_t)(eq - extra[e]) : strlen(extra[e]);
            overridden = strncmp(environ[i], extra[e], namelen) == 0 && environ[i][namelen] == '=';
        }
        if (!overridden)
            envp[k++] = environ[i];
    }
    /* Later entries of extra override earlier ones: keep only the last of each name. */
    for (size_t e = 0; e < n_extra; e++) {
        const char *eq = strchr(extra[e], '=');
        size_t namelen = eq ? (size_t)(eq - extra[e]) : strlen(extra[e]);
        int later = 0;
        for (size_t f = e + 1; f < n_extra && !later; f++)
            later = strncmp(extra[f], extra[e], namelen + 1) == 0;
        if (!later)
            envp[k++] = (char *)extra[e];
    }
    envp[k] = NULL;
    return envp;
}

/* Forks and execs PW_WORKER with argv[1] = arg, stdout+stderr to log_path. Returns the pid or -1. */
static pid_t spawn_worker(const char *arg, const char *const *extra_env, const char *log_path)
{
    const char *bin = env_or_die("PW_WORKER");
    if (bin == NULL)
        return -1;
    char **envp = child_env(extra_env);
    int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "harness: open %s: %s\n", log_path, strerror(errno));
        free(envp);
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        pwt_child_redirect_fd(fd);
        char *argv[] = {(char *)bin, (char *)arg, NULL};
        execve(bin, argv, envp);
        dprintf(STDERR_FILENO, "harness: exec %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    close(fd);
    free(envp);
    if (pid < 0)
        fprintf(stderr, "harness: fork: %s\n", strerror(errno));
    return pid;
}

int pwt_migrate(void)
{
    if (ensure_log_dir() != 0)
        return -1;
    char log_path[600], dburl[2100];
    snprintf(log_path, sizeof log_path, "%s/migrate-%d.log", log_dir, ++log_seq);
    snprintf(dburl, sizeof dburl, "DATABASE_URL=%s", db_conninfo);
    const char *env[] = {dburl, "LOG_LEVEL=debug", NULL};
    pid_t pid = spawn_worker("migrate", env, log_path);
    if (pid < 0)
        return -1;
    int wstatus;
    while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR)
        ;
    int code = pwt_exit_code(wstatus);
    if (code != 0) {
        fprintf(stderr, "harness: `worker migrate` exited with %d\n", code);
        pwt_print_file_tail("migrate log", log_path, PWT_LOG_TAIL_LINES);
        keep_logs = 1;
    }
    return code;
}

static void track(pwt_worker_t *w, int on)
{
    pwt_slots_track(live_workers, PWT_MAX_WORKERS, w, on);
}

int pwt_worker_alive(pwt_worker_t *w)
{
    if (w->pid <= 0)
        return 0;
    int wstatus;
    pid_t r = waitpid(w->pid, &wstatus, WNOHANG);
    if (r == 0)
        return 1;
    if (r == w->pid)
        fprintf(stderr, "harness: worker on port %d exited with %d\n", w->port, pwt_exit_code(wstatus));
    w->pid = 0;
    track(w, 0);
    return 0;
}

/* One readiness probe: the status of GET path, or -1 when nothing answers yet. */
static long probe_ready(const pwt_worker_t *w, const char *path)
{
    char url[128];
    snprintf(url, sizeof url, "%s%s", w->base_url, path);
    return pwt_http_request("GET", url, NULL, NULL, 1000, NULL);
}

/* The value of name ("NAME=") in env as the worker sees it (the last one wins), or NULL. */
static const char *env_value(const char *const *env, const char *name)
{
    const char *v = NULL;
    for (size_t i = 0; env[i] != NULL; i++)
        if (strncmp(env[i], name, strlen(name)) == 0)
            v = env[i] + strlen(name);
    return v;
}

/*
 * Once ready, a worker's connections warm up (worker/db.c: send_warmup) while nothing else is to be
 * done: waits until each has logged the end of its warm-up, so that what a test does next (a
 * TRUNCATE of every table, a LOCK) never meets it. Behind a pooler there is none, and with a log level
 * above info the lines do not show: no wait then.
 */
static int wait_warmed_up(pwt_worker_t *w, const char *const *env, long long deadline)
{
    const char *pooler = env_value(env, "DB_POOLER="), *level = env_value(env, "LOG_LEVEL="), *n = env_value(env, "DB_CONNECTIONS=");
    if ((pooler != NULL && strcmp(pooler, "transaction") == 0) ||
        (level != NULL && strcmp(level, "debug") != 0 && strcmp(level, "info") != 0))
        return 0;
    int conns = n != NULL && atoi(n) > 0 ? atoi(n) : 1;
    while (pwt_now_ms() < deadline) {
        char *log = pwt_worker_log(w);
        int done = pwt_count_substr(log, "database: warmed up") + pwt_count_substr(log, "database: warming up the statement failed");
        free(log);
        if (done >= conns)
            return 0;
        if (!pwt_worker_alive(w))
            return -1;
        pwt_sleep_ms(10);
    }
    fprintf(stderr, "harness: worker on port %d did not end its warm-up within %d ms\n", w->port, PWT_READY_TIMEOUT_MS);
    return -1;
}

static int worker_start_once(pwt_worker_t *w, int port, const char *ready_path, const char *const *env)
{
    size_t n_extra = 0;
    while (env != NULL && env[n_extra] != NULL)
        n_extra++;
    char dburl[2100], port_env[32];
    snprintf(dburl, sizeof dburl, "DATABASE_URL=%s", worker_conninfo);
    const char *pooler = getenv("PW_TEST_POOLER_URL");
    w->port = port > 0 ? port : pwt_free_port();
    if (w->port < 0)
        return -1;
    snprintf(port_env, sizeof port_env, "PORT=%d", w->port);
    snprintf(w->base_url, sizeof w->base_url, "http://127.0.0.1:%d", w->port);
    snprintf(w->log_path, sizeof w->log_path, "%s/worker-%d-port%d.log", log_dir, ++log_seq, w->port);

    const char **all = pwt_xmalloc((n_extra + 6) * sizeof *all);
    size_t k = 0;
    all[k++] = dburl;
    all[k++] = port_env;
    all[k++] = "PUBSUB_AUTH=off";
    all[k++] = "LOG_LEVEL=debug";
    if (pooler != NULL && *pooler != '\0')
        all[k++] = "DB_POOLER=transaction";
    for (size_t i = 0; i < n_extra; i++)
        all[k++] = env[i];
    all[k] = NULL;
    w->pid = spawn_worker("serve", all, w->log_path);
    if (w->pid < 0) {
        free(all);
        w->pid = 0;
        return -1;
    }
    track(w, 1);

    long long deadline = pwt_now_ms() + PWT_READY_TIMEOUT_MS;
    long status = -1;
    int rc = -1;
    while (pwt_now_ms() < deadline && pwt_worker_alive(w)) {
        status = probe_ready(w, ready_path);
        if (status == 200) {
            rc = strcmp(ready_path, "/readyz") != 0 ? 0 : wait_warmed_up(w, all, deadline);
            break;
        }
        pwt_sleep_ms(50);
    }
    free(all);
    if (rc == 0)
        return 0;
    if (w->pid > 0 && status != 200) /* (pwt_worker_alive said so when it exited) */
        fprintf(stderr, "harness: worker on port %d not ready after %d ms (last %s: %ld)\n", w->port, PWT_READY_TIMEOUT_MS,
                ready_path, status);
    pwt_worker_stop(w);
    return -1;
}

int pwt_worker_start_at(pwt_worker_t *w, int port, const char *ready_path, const char *const *env)
{
    memset(w, 0, sizeof *w);
    if (ensure_log_dir() != 0 || db_conninfo[0] == '\0') {
        fprintf(stderr, "harness: pwt_db_create first\n");
        return -1;
    }
    /* A second attempt covers the rare race where another process took the port we picked. */
    for (int attempt = 1; attempt <= (port > 0 ? 1 : 2); attempt++) {
        if (worker_start_once(w, port, ready_path, env) == 0)
            return 0;
        fprintf(stderr, "harness: worker start attempt %d failed\n", attempt);
        pwt_worker_print_log(w, PWT_LOG_TAIL_LINES);
    }
    keep_logs = 1;
    return -1;
}

int pwt_worker_start(pwt_worker_t *w, const char *const *env)
{
    return pwt_worker_start_at(w, 0, "/readyz", env);
}

int pwt_worker_stop(pwt_worker_t *w)
{
    if (w->pid <= 0)
        return -1;
    pid_t pid = w->pid;
    int wstatus = 0;
    kill(pid, SIGTERM);
    long long deadline = pwt_now_ms() + PWT_STOP_TIMEOUT_MS;
    pid_t r;
    while ((r = waitpid(pid, &wstatus, WNOHANG)) == 0 && pwt_now_ms() < deadline)
        pwt_sleep_ms(10);
    if (r == 0) {
        fprintf(stderr, "harness: worker on port %d ignored SIGTERM for %d ms; killing it\n", w->port, PWT_STOP_TIMEOUT_MS);
        kill(pid, SIGKILL);
        waitpid(pid, &wstatus, 0);
        keep_logs = 1;
    }
    w->pid = 0;
    track(w, 0);
    return r < 0 ? -1 : pwt_exit_code(wstatus);
}

char *pwt_worker_log(const pwt_worker_t *w)
{
    char *text = pwt_read_file(w->log_path, NULL);
    return text ? text : pwt_xstrdup("");
}

void pwt_worker_print_log(const pwt_worker_t *w, int max_lines)
{
    char title[64];
    snprintf(title, sizeof title, "worker log, port %d", w->port);
    pwt_print_file_tail(title, w->log_path, max_lines);
}

/* ---- HTTP ------------------------------------------------------------------------------------- */

static size_t collect(char *data, size_t size, size_t nmemb, void *userdata)
{
    buf_append(userdata, data, size * nmemb);
    return size * nmemb;
}

long pwt_request(const pwt_worker_t *w, const char *method, const char *path, const void *body, size_t len,
                 const char *const *headers, pwt_response_t *resp)
{
    CURL *c = curl_easy_init();
    char url[1024];
    snprintf(url, sizeof url, "%s%s", w->base_url, path);
    buf_t hdr = {0}, out = {0};
    struct curl_slist *list = NULL;
    list = curl_slist_append(list, "Content-Type: application/json");
    list = curl_slist_append(list, "Expect:");
    for (size_t i = 0; headers != NULL && headers[i] != NULL; i++)
        list = curl_slist_append(list, headers[i]);

    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)PWT_HTTP_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &hdr);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &out);
    if (body != NULL) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    }
    if (strcmp(method, "GET") == 0 && body == NULL)
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    else if (strcmp(method, "POST") != 0)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (strcmp(method, "POST") == 0 && body == NULL) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, 0L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
    }

    long status = -1;
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    else
        fprintf(stderr, "harness: %s %s: %s\n", method, url, curl_easy_strerror(rc));
    curl_slist_free_all(list);
    curl_easy_cleanup(c);

    if (resp != NULL) {
        resp->status = status;
        resp->body_len = out.len;
        resp->body = buf_take(&out);
        resp->headers = buf_take(&hdr);
    } else {
        free(out.p);
        free(hdr.p);
    }
    return status;
}

long pwt_post(const pwt_worker_t *w, const char *path, const void *body, size_t len, const char *const *headers,
              pwt_response_t *resp)
{
    return pwt_request(w, "POST", path, body, len, headers, resp);
}

long pwt_get(const pwt_worker_t *w, const char *path, pwt_response_t *resp)
{
    return pwt_request(w, "GET", path, NULL, 0, NULL, resp);
}

char *pwt_response_header(const pwt_response_t *resp, const char *name)
{
    size_t namelen = strlen(name);
    const char *line = resp->headers;
    while (line != NULL && *line != '\0') {
        if (strncasecmp(line, name, namelen) == 0 && line[namelen] == ':') {
            const char *v = line + namelen + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            size_t n = strcspn(v, "\r\n");
            char *out = pwt_xmalloc(n + 1);
            memcpy(out, v, n);
            out[n] = '\0';
            return out;
        }
        line = strchr(line, '\n');
        if (line != NULL)
            line++;
    }
    return NULL;
}

void pwt_response_free(pwt_response_t *resp)
{
    free(resp->headers);
    free(resp->body);
    resp->headers = resp->body = NULL;
}

/* ---- pushes and fixtures ---------------------------------------------------------------------- */

char *pwt_base64(const void *data, size_t len)
{
    char *out = pwt_xmalloc(4 * ((len + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    return out;
}

char *pwt_wrap(const void *payload, size_t len, const char *message_id, const char *subscription, const char *publish_time)
{
    char *data = pwt_base64(payload, len);
    json_object *root = json_object_new_object();
    json_object *msg = json_object_new_object();
    json_object_object_add(msg, "data", json_object_new_string(data));
    if (message_id != NULL) {
        json_object_object_add(msg, "messageId", json_object_new_string(message_id));
        json_object_object_add(msg, "message_id", json_object_new_string(message_id));
    }
    if (publish_time != NULL) {
        json_object_object_add(msg, "publishTime", json_object_new_string(publish_time));
        json_object_object_add(msg, "publish_time", json_object_new_string(publish_time));
    }
    json_object_object_add(root, "message", msg);
    if (subscription != NULL)
        json_object_object_add(root, "subscription", json_object_new_string(subscription));
    char *out = pwt_xstrdup(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(root);
    free(data);
    return out;
}

long pwt_push(const pwt_worker_t *w, const void *payload, size_t len, const char *message_id, const char *subscription,
              const char *publish_time)
{
    char *body = pwt_wrap(payload, len, message_id, subscription, publish_time);
    long status = pwt_post(w, "/", body, strlen(body), NULL, NULL);
    free(body);
    return status;
}

char *pwt_wrap_fixture(const char *rel, const char *message_id, const char *subscription, const char *publish_time)
{
    size_t len;
    char *payload = pwt_read_fixture(rel, &len);
    char *body = pwt_wrap(payload, len, message_id, subscription, publish_time);
    free(payload);
    return body;
}

long pwt_push_fixture(const pwt_worker_t *w, const char *rel, const char *message_id, const char *subscription,
                      const char *publish_time)
{
    size_t len;
    char *payload = pwt_read_fixture(rel, &len);
    long status = pwt_push(w, payload, len, message_id, subscription, publish_time);
    free(payload);
    return status;
}

char *pwt__pad_json(const char *file, int line, char *json, size_t len)
{
    size_t natural = strlen(json);
    if (natural > len)
        pwt_fail(file, line, "a JSON text of %zu bytes cannot be padded to %zu", natural, len);
    char *out = pwt_xmalloc(len + 1);
    memcpy(out, json, natural - 1); /* all but the final '}' */
    memset(out + natural - 1, ' ', len - natural);
    out[len - 1] = '}';
    out[len] = '\0';
    free(json);
    return out;
}

char *pwt_meta_webhook(const char *value_members)
{
    return pwt_xasprintf("{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"104996335712345\",\"changes\":[{"
                         "\"field\":\"messages\",\"value\":{\"messaging_product\":\"whatsapp\",\"metadata\":{"
                         "\"display_phone_number\":\"15550783881\",\"phone_number_id\":\"106540352242922\"},%s}}]}]}",
                         value_members);
}

char *pwt_read_fixture(const char *rel, size_t *len)
{
    const char *dir = getenv("PW_FIXTURES");
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir ? dir : "tests/fixtures", rel);
    char *text = pwt_read_file(path, len);
    if (text == NULL)
        FAIL("cannot read fixture %s: %s", path, strerror(errno));
    return text;
}

/* ---- database checks -------------------------------------------------------------------------- */

static PGresult *checker_query(const char *sql, const char *const *params)
{
    if (checker == NULL)
        FAIL("no checker connection (pwt_db_create failed or was not called)");
    if (PQstatus(checker) != CONNECTION_OK) {
        PQreset(checker);
        PGresult *r = PQexec(checker, CHECKER_SETTINGS);
        PQclear(r);
    }
    int n = 0;
    while (params != NULL && params[n] != NULL)
        n++;
    PGresult *r = PQexecParams(checker, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", PQerrorMessage(checker));
        PQclear(r);
        FAIL("SQL failed: %s\n  %s", sql, msg);
    }
    return r;
}

/* Every row of r: columns joined by '|', rows by '\n', NULL for SQL NULL; malloc'd. */
static char *format_rows(const PGresult *r)
{
    buf_t b = {0};
    for (int i = 0; i < PQntuples(r); i++) {
        if (i > 0)
            buf_puts(&b, "\n");
        for (int j = 0; j < PQnfields(r); j++) {
            if (j > 0)
                buf_puts(&b, "|");
            buf_puts(&b, PQgetisnull(r, i, j) ? "NULL" : PQgetvalue(r, i, j));
        }
    }
    return buf_take(&b);
}

char *pwt_rows_p(const char *sql, const char *const *params)
{
    PGresult *r = checker_query(sql, params);
    char *rows = format_rows(r);
    PQclear(r);
    return rows;
}

char *pwt_rows(const char *sql)
{
    return pwt_rows_p(sql, NULL);
}

long long pwt_scalar_int(const char *sql)
{
    PGresult *r = checker_query(sql, NULL);
    if (PQntuples(r) != 1 || PQnfields(r) != 1 || PQgetisnull(r, 0, 0)) {
        int rows = PQntuples(r);
        PQclear(r);
        FAIL("expected one non-NULL value from: %s (got %d rows)", sql, rows);
    }
    char *end;
    long long v = strtoll(PQgetvalue(r, 0, 0), &end, 10);
    int bad = *end != '\0';
    PQclear(r);
    if (bad)
        FAIL("not an integer from: %s", sql);
    return v;
}

void pwt_exec(const char *sql)
{
    PQclear(checker_query(sql, NULL));
}

void pwt_truncate_all(void)
{
    buf_t b = {0};
    buf_puts(&b, "TRUNCATE ");
    for (int i = 0; worker_tables[i] != NULL; i++) {
        if (i > 0)
            buf_puts(&b, ", ");
        buf_puts(&b, worker_tables[i]);
    }
    buf_puts(&b, " RESTART IDENTITY");
    pwt_exec(b.p);
    free(b.p);
}

char *pwt_dump_tables(void)
{
    buf_t b = {0};
    for (int i = 0; worker_tables[i] != NULL; i++) {
        char sql[256];
        snprintf(sql, sizeof sql, "SELECT t::text FROM %s t ORDER BY 1", worker_tables[i]);
        char *rows = pwt_rows(sql);
        buf_puts(&b, "== ");
        buf_puts(&b, worker_tables[i]);
        buf_puts(&b, "\n");
        buf_puts(&b, rows);
        buf_puts(&b, "\n");
        free(rows);
    }
    return buf_take(&b);
}

void pwt__assert_rows(const char *file, int line, const char *sql, const char *const *params, const char *expected)
{
    char *actual = pwt_rows_p(sql, params);
    if (strcmp(actual, expected) != 0) {
        fprintf(stderr, "\n%s:%d: rows differ\n  query: %s\n---- expected ----\n%s\n---- actual ----\n%s\n------------------\n",
                file, line, sql, expected, actual);
        free(actual);
        pwt_fail(file, line, "rows differ (see above)");
    }
    free(actual);
}

/*
 * Migration 0008's roll-ups against the rows there are, each side computed its own way: the
 * expected side from message_status_times and 0002's failure rule (the views as they were before
 * the roll-ups), the actual side summed over the roll-ups' slots. Latency totals compared to the
 * microsecond (the view's latencies are float8). Since 0009 that view reads the stored times of
 * message_logs, so they are first checked against whatsapp_status parsed as 0002 reads it
 * (pw_status_time, not the pw_status_instant they are generated with). Each query lists the
 * differing keys: none.
 */
void pwt__assert_rollups_consistent(const char *file, int line)
{
    static const char stored[] =
        "SELECT 'stored', bsp_msg_id, whatsapp_status, created_at, sent_at, delivered_at, read_at, failed_at"
        " FROM message_logs WHERE (sent_at, delivered_at, read_at, failed_at) IS DISTINCT FROM"
        " (coalesce(pw_status_time(whatsapp_status->>'sent'), created_at), pw_status_time(whatsapp_status->>'delivered'),"
        "  pw_status_time(whatsapp_status->>'read'), pw_status_time(whatsapp_status->>'failed'))"
        " ORDER BY bsp_msg_id LIMIT 20";
    static const char status[] =
        "WITH want AS (SELECT sent_day AS day, count(*) AS m, count(delivered_at) AS d, count(read_at) AS r,"
        "                     count(failed_at) AS f FROM message_status_times GROUP BY 1),"
        " got AS (SELECT day, sum(messages) AS m, sum(delivered) AS d, sum(read) AS r, sum(failed) AS f"
        "         FROM message_status_rollup GROUP BY 1"
        "         HAVING sum(messages) <> 0 OR sum(delivered) <> 0 OR sum(read) <> 0 OR sum(failed) <> 0)"
        " SELECT 'status', day, w.m, g.m, w.d, g.d, w.r, g.r, w.f, g.f FROM want w FULL JOIN got g USING (day)"
        " WHERE (w.m, w.d, w.r, w.f) IS DISTINCT FROM (g.m, g.d, g.r, g.f) ORDER BY day LIMIT 20";
    static const char latency[] =
        "WITH want AS (SELECT sent_day AS day, v.k AS kind, pw_latency_bucket(v.s) AS bucket, count(*) AS n,"
        "                     round(sum(v.s)::numeric, 6) AS total"
        "              FROM message_status_times CROSS JOIN LATERAL (VALUES (1, delivery_seconds), (2, read_seconds),"
        "                   (3, read_after_sent_seconds)) v(k, s) WHERE v.s IS NOT NULL GROUP BY 1, 2, 3),"
        " got AS (SELECT day, kind, bucket, sum(n) AS n, round(sum(total), 6) AS total FROM message_latency_rollup"
        "         GROUP BY 1, 2, 3 HAVING sum(n) <> 0 OR sum(total) <> 0)"
        " SELECT 'latency', day, kind, bucket, w.n, g.n, w.total, g.total FROM want w FULL JOIN got g USING (day, kind, bucket)"
        " WHERE (w.n, w.total) IS DISTINCT FROM (g.n, g.total) ORDER BY 2, 3, 4 LIMIT 20";
    static const char failures[] =
        "WITH want AS (SELECT t.sent_day AS day, e.value->>'code' AS code,"
        "                     coalesce(e.value->>'title', e.value->>'message', e.value->>'reason') AS title,"
        "                     count(DISTINCT t.bsp_msg_id) AS n"
        "              FROM message_status_times t LEFT JOIN LATERAL jsonb_array_elements(CASE jsonb_typeof(t.last_error)"
        "                   WHEN 'array' THEN t.last_error WHEN 'object' THEN jsonb_build_array(t.last_error)"
        "                   ELSE '[]'::jsonb END) e ON true"
        "              WHERE t.failed_at IS NOT NULL GROUP BY 1, 2, 3),"
        " got AS (SELECT day, error_code AS code, error_title AS title, sum(messages) AS n FROM message_failure_rollup"
        "         GROUP BY 1, 2, 3 HAVING sum(messages) <> 0)"
        " SELECT 'failures', w.day, g.day, w.code, g.code, w.title, g.title, w.n, g.n FROM want w FULL JOIN got g"
        "   ON g.day = w.day AND g.code IS NOT DISTINCT FROM w.code AND g.title IS NOT DISTINCT FROM w.title"
        " WHERE w.n IS DISTINCT FROM g.n ORDER BY 2, 3 LIMIT 20";
    pwt__assert_rows(file, line, stored, NULL, "");
    pwt__assert_rows(file, line, status, NULL, "");
    pwt__assert_rows(file, line, latency, NULL, "");
    pwt__assert_rows(file, line, failures, NULL, "");
}

void pwt__assert_text(const char *file, int line, const char *actual, const char *expected)
{
    if (strcmp(actual, expected) != 0) {
        fprintf(stderr, "\n%s:%d: texts differ\n---- expected ----\n%s\n---- actual ----\n%s\n------------------\n", file, line,
                expected, actual);
        pwt_fail(file, line, "texts differ (see above)");
    }
}

void pwt__assert_status(const char *file, int line, long actual, long expected)
{
    if (actual != expected)
        pwt_fail(file, line, "HTTP status %ld, expected %ld", actual, expected);
}

void pwt__assert_tables_unchanged(const char *file, int line, char *before)
{
    char *after = pwt_dump_tables();
    pwt__assert_text(file, line, after, before);
    free(after);
    free(before);
}

char *pwt_rows_at(const char *conninfo, const char *sql)
{
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "harness: cannot connect for %s: %s", sql, PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    PQclear(PQexec(c, CHECKER_SETTINGS));
    PGresult *r = PQexec(c, sql);
    char *rows = NULL;
    if (PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK)
        rows = format_rows(r);
    else
        fprintf(stderr, "harness: %s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    return rows;
}

void pwt__assert_rows_at(const char *file, int line, const char *conninfo, const char *sql, const char *expected)
{
    char *actual = pwt_rows_at(conninfo, sql);
    if (actual == NULL || strcmp(actual, expected) != 0) {
        fprintf(stderr, "\n%s:%d: rows differ\n  query: %s\n---- expected ----\n%s\n---- actual ----\n%s\n------------------\n",
                file, line, sql, expected, actual ? actual : "(query failed)");
        free(actual);
        pwt_fail(file, line, "rows differ (see above)");
    }
    free(actual);
}

void pwt_admin_exec(const char *sql)
{
    const char *admin = getenv("PW_TEST_DATABASE_URL");
    char *rows = admin != NULL ? pwt_rows_at(admin, sql) : NULL;
    if (rows == NULL)
        FAIL("admin SQL failed: %s", sql);
    free(rows);
}

int pwt_worker_command(const char *env, const char *url, const char *args, char **out)
{
    const char *bin = getenv("PW_WORKER");
    char *q_url = pwt_shell_quote(url != NULL ? url : db_conninfo);
    char *q_bin = pwt_shell_quote(bin != NULL ? bin : "PW_WORKER-is-not-set");
    char *cmd = pwt_xasprintf("%s DATABASE_URL=%s %s %s 2>&1", env, q_url, q_bin, args);
    int status = pwt_popen_read(cmd, out);
    free(cmd);
    free(q_bin);
    free(q_url);
    return status;
}

/* ---- the usual fixture ------------------------------------------------------------------------ */

int pwt_suite_start(const char *name, pwt_worker_t *w, const char *const *env)
{
    if (pwt_db_create(name) != 0 || pwt_migrate() != 0)
        return -1;
    return w != NULL ? pwt_worker_start(w, env) : 0;
}

int pwt_suite_stop(pwt_worker_t *w)
{
    int code = 0;
    if (w != NULL) {
        code = pwt_worker_stop(w);
        if (code != 0 && code != -1)
            fprintf(stderr, "worker exited with %d after SIGTERM (expected 0)\n", code);
    }
    pwt_db_drop();
    return code;
}

int pwt_teardown_db(void **state)
{
    (void)state;
    pwt_db_drop();
    return 0;
}

static struct {
    const char *name;
    pwt_worker_t *worker;
    const char *const *env;
} suite;

void pwt_suite_init(const char *name, pwt_worker_t *w, const char *const *env)
{
    suite.name = name;
    suite.worker = w;
    suite.env = env;
}

int pwt_setup_db(void **state)
{
    (void)state;
    return pwt_db_create(suite.name);
}

int pwt_suite_setup(void **state)
{
    (void)state;
    return pwt_suite_start(suite.name, suite.worker, suite.env);
}

int pwt_suite_teardown(void **state)
{
    (void)state;
    return pwt_suite_stop(suite.worker) == 0 ? 0 : -1;
}

int pwt_suite_teardown_any_exit(void **state)
{
    (void)state;
    pwt_suite_stop(suite.worker);
    return 0;
}

int pwt_suite_fresh(void **state)
{
    (void)state;
    if (suite.worker != NULL && pwt_worker_ensure(suite.worker, suite.env) != 0)
        return -1;
    pwt_truncate_all();
    return 0;
}

int pwt_suite_alive(void **state)
{
    (void)state;
    return suite.worker != NULL ? pwt_worker_check_alive(suite.worker) : 0;
}

int pwt_worker_ensure(pwt_worker_t *w, const char *const *env)
{
    if (pwt_worker_alive(w))
        return 0;
    fprintf(stderr, "the worker had died; restarting it\n");
    pwt_worker_print_log(w, PWT_LOG_TAIL_LINES);
    return pwt_worker_start(w, env);
}

int pwt_worker_check_alive(pwt_worker_t *w)
{
    if (pwt_worker_alive(w))
        return 0;
    fprintf(stderr, "the worker died during this test\n");
    pwt_worker_print_log(w, 60);
    return -1;
}

/* ---- metrics and background posts ----------------------------------------------------------- */

long long pwt_metric(const pwt_worker_t *w, const char *sample)
{
    pwt_response_t r;
    long long v = -1;
    size_t n = strlen(sample);
    if (pwt_get(w, "/metrics", &r) == 200) {
        for (const char *line = r.body; line != NULL && *line != '\0';) {
            if (strncmp(line, sample, n) == 0 && line[n] == ' ')
                v = atoll(line + n + 1);
            line = strchr(line, '\n');
            if (line != NULL)
                line++;
        }
    }
    pwt_response_free(&r);
    return v;
}

void pwt__wait_metric(const char *file, int line, const pwt_worker_t *w, const char *sample, long long value, int at_least)
{
    for (int i = 0; i < PWT_METRIC_POLLS; i++) {
        long long v = pwt_metric(w, sample);
        if (at_least ? v >= value : v == value)
            return;
        pwt_sleep_ms(PWT_METRIC_POLL_MS);
    }
    if (at_least)
        pwt_fail(file, line, "%s never reached %lld (now %lld)", sample, value, pwt_metric(w, sample));
    pwt_fail(file, line, "%s stayed at %lld, expected %lld", sample, pwt_metric(w, sample), value);
}

static void *bg_post(void *arg)
{
    pwt_bg_post_t *p = arg;
    p->status = pwt_post(p->w, "/", p->body, strlen(p->body), NULL, NULL);
    return NULL;
}

void pwt_bg_post_start(pwt_bg_post_t *p, const pwt_worker_t *w, char *body)
{
    p->w = w;
    p->body = body;
    p->status = 0;
    pthread_create(&p->tid, NULL, bg_post, p);
}

long pwt_bg_post_join(pwt_bg_post_t *p)
{
    pthread_join(p->tid, NULL);
    free(p->body);
    p->body = NULL;
    return p->status;
}
