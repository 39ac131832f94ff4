/*
 * The Google Pub/Sub emulator as a real push client: topics and push subscriptions are made over
 * its REST API, fixtures are published to it, and it pushes them to the worker (wrapped, or
 * unwrapped with metadata headers), retrying what the worker does not acknowledge.
 *
 * The emulator (Debian package google-cloud-cli-pubsub-emulator, Java 17) is started once for
 * this binary on a free loopback port, in a process group of its own, with a private temporary
 * directory, and stopped in the group teardown; it is also killed when this process exits or
 * dies (atexit, fatal signals, and PR_SET_PDEATHSIG in the child), so no Java is left behind.
 * When it is not installed, every test is skipped with a message. PWT_PUBSUB_EMULATOR overrides
 * its path.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <json-c/json.h>
#include <libpq-fe.h>

#include "tests/integration/harness.h"

#define EMULATOR_DEFAULT "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"
#define NOT_INSTALLED "Pub/Sub emulator not installed (package google-cloud-cli-pubsub-emulator): skipping"
#define PROJECT "pw-test"
#define EMULATOR_START_TIMEOUT_MS 60000
#define DELIVERY_TIMEOUT_MS 20000
#define PG_BIN "/usr/lib/postgresql/15/bin"

/* ---- small helpers ----------------------------------------------------------------------------- */

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return strdup("");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)(n > 0 ? n : 0) + 1);
    size_t got = n > 0 ? fread(s, 1, (size_t)n, f) : 0;
    s[got] = '\0';
    fclose(f);
    return s;
}

/* Prints the last lines of a file to stderr. */
static void print_tail(const char *title, const char *path, int max_lines)
{
    char *text = read_text(path);
    size_t len = strlen(text), start = len;
    int lines = 0;
    while (start > 0 && !(text[start - 1] == '\n' && start != len && ++lines >= max_lines))
        start--;
    fprintf(stderr, "---- %s (%s), last %d lines ----\n%s\n---- end of %s ----\n", title, path, max_lines,
            text + start, title);
    free(text);
}

/* Number of (non-overlapping) occurrences of needle in hay. */
static int count_substr(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = 0};
    socklen_t salen = sizeof sa;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &salen) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* In a forked child: closes every descriptor above stderr, so nothing of ours leaks into it. */
static void close_inherited_fds(void)
{
    long max = sysconf(_SC_OPEN_MAX);
    for (int fd = 3; fd < (max > 0 && max < 65536 ? max : 65536); fd++)
        close(fd);
}

/*
 * Runs argv (PATH searched) with cwd "/", extra "NAME=value" env (NULL-terminated, may be NULL),
 * stdout and stderr appended to out_path. Returns the exit status (or -1).
 */
static volatile pid_t running_cmd; /* the child run_cmd waits for, for the signal handler */

static int run_cmd(const char *const *argv, const char *const *env, const char *out_path)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(out_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
        }
        close_inherited_fds();
        if (chdir("/") != 0)
            _exit(126);
        for (int i = 0; env != NULL && env[i] != NULL; i++)
            putenv((char *)env[i]);
        execvp(argv[0], (char *const *)argv);
        dprintf(STDERR_FILENO, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    if (pid < 0)
        return -1;
    running_cmd = pid;
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    running_cmd = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

static void json_add_str(json_object *o, const char *key, const char *val)
{
    json_object_object_add(o, key, json_object_new_string(val));
}

/* ---- the emulator process ----------------------------------------------------------------------- */

/*
 * Everything this binary makes on disk lives in work_dir (/tmp/pwt-emu-XXXXXX, removed at the end):
 *   emulator/      the emulator's cwd, HOME and java.io.tmpdir      emulator.log   its output
 *   pg/            the private PostgreSQL cluster (scripts/dev-db)  pg.log         dev-db, pg_ctl, migrate output
 */
static char work_dir[64];
static char emulator_dir[128], emulator_log[128], pg_dir[128], pg_cmd_log[128];
static char dev_db[PATH_MAX + 32]; /* scripts/dev-db */

static const char *emulator_path;
static int emulator_installed;
static pid_t emulator_pid; /* also its process group */
static int emulator_port;
static int pg_running;     /* the private cluster may exist: stop it before removing work_dir */
static pwt_worker_t worker; /* the worker of the running test (the harness does not kill it on a signal) */

static void kill_emulator_now(void)
{
    if (emulator_pid > 0)
        kill(-emulator_pid, SIGKILL);
}

/* Runs argv and waits, using only async-signal-safe calls (for the signal handler). */
static void run_in_handler(char *const *argv)
{
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    if (pid > 0)
        waitpid(pid, NULL, 0);
}

/* Interrupted (Ctrl-C, a test driver's timeout) or crashed: leave no Java, no PostgreSQL, no files. */
static void on_fatal_signal(int sig)
{
    kill_emulator_now();
    if (worker.pid > 0)
        kill(worker.pid, SIGKILL);
    if (running_cmd > 0) {
        kill(running_cmd, SIGTERM);
        waitpid(running_cmd, NULL, 0);
    }
    if (pg_running) {
        char *const stop[] = {dev_db, "stop", pg_dir, NULL};
        run_in_handler(stop);
    }
    if (work_dir[0] != '\0') {
        char *const rm[] = {"/bin/rm", "-rf", work_dir, NULL};
        run_in_handler(rm);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static void stop_emulator(void)
{
    if (emulator_pid <= 0)
        return;
    kill(-emulator_pid, SIGTERM);
    long long deadline = now_ms() + 5000;
    int st;
    pid_t r;
    while ((r = waitpid(emulator_pid, &st, WNOHANG)) == 0 && now_ms() < deadline)
        sleep_ms(50);
    kill(-emulator_pid, SIGKILL); /* whatever is left of the group */
    if (r == 0)
        waitpid(emulator_pid, &st, 0);
    emulator_pid = 0;
}

/* One HTTP request to the emulator's REST API. Returns the status (-1: transport error); *out gets the body. */
static long emu_http(const char *method, const char *path, const char *json, char **out)
{
    CURL *c = curl_easy_init();
    char url[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", emulator_port, path);
    FILE *mem;
    char *body = NULL;
    size_t body_len = 0;
    mem = open_memstream(&body, &body_len);
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, mem);
    if (json != NULL)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, json);
    long status = -1;
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(c);
    fclose(mem);
    if (out != NULL)
        *out = body;
    else
        free(body);
    return status;
}

/* Starts the emulator and waits until its REST API answers. 0, or -1 with the reason printed. */
static int start_emulator(void)
{
    if (mkdir(emulator_dir, 0755) != 0) {
        fprintf(stderr, "emulator: mkdir %s: %s\n", emulator_dir, strerror(errno));
        return -1;
    }
    emulator_port = free_port();
    char port_arg[32], java_opts[700], home[300];
    snprintf(port_arg, sizeof port_arg, "--port=%d", emulator_port);
    snprintf(java_opts, sizeof java_opts, "JAVA_OPTS=-Djava.io.tmpdir=%s -Duser.home=%s", emulator_dir, emulator_dir);
    snprintf(home, sizeof home, "HOME=%s", emulator_dir);

    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* survives the exec: Java dies with this process */
        if (getppid() != parent)
            _exit(1);
        int fd = open(emulator_log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
        }
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, STDIN_FILENO);
        close_inherited_fds();
        if (chdir(emulator_dir) != 0)
            _exit(126);
        putenv(java_opts);
        putenv(home);
        execl(emulator_path, emulator_path, "--host=127.0.0.1", port_arg, (char *)NULL);
        dprintf(STDERR_FILENO, "exec %s: %s\n", emulator_path, strerror(errno));
        _exit(127);
    }
    if (pid < 0)
        return -1;
    setpgid(pid, pid); /* also from here, so the group exists before we might signal it */
    emulator_pid = pid;

    long long t0 = now_ms();
    while (now_ms() - t0 < EMULATOR_START_TIMEOUT_MS) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            emulator_pid = 0;
            fprintf(stderr, "emulator: exited during start-up\n");
            print_tail("emulator log", emulator_log, 30);
            return -1;
        }
        if (emu_http("GET", "/", NULL, NULL) == 200) {
            printf("# Pub/Sub emulator up on 127.0.0.1:%d after %lld ms\n", emulator_port, now_ms() - t0);
            return 0;
        }
        sleep_ms(100);
    }
    fprintf(stderr, "emulator: no answer on port %d after %d ms\n", emulator_port, EMULATOR_START_TIMEOUT_MS);
    print_tail("emulator log", emulator_log, 30);
    stop_emulator();
    return -1;
}

/* ---- topics, subscriptions, publishing ---------------------------------------------------------- */

static void emu_expect(long status, const char *what, const char *answer, const char *file, int line)
{
    if (status != 200) {
        print_tail("emulator log", emulator_log, 20);
        pwt_fail(file, line, "emulator %s answered %ld: %s", what, status, answer ? answer : "");
    }
}

/* Creates topic NAME and push subscription NAME-push to the worker; wrapped or unwrapped (with metadata). */
#define MAKE_PUSH_SUBSCRIPTION(name, w, unwrapped) make_push_subscription((name), (w), (unwrapped), __FILE__, __LINE__)
static void make_push_subscription(const char *name, const pwt_worker_t *w, int unwrapped, const char *file, int line)
{
    char path[256], *answer = NULL;
    snprintf(path, sizeof path, "/v1/projects/" PROJECT "/topics/%s", name);
    long st = emu_http("PUT", path, "{}", &answer);
    emu_expect(st, "create topic", answer, file, line);
    free(answer);

    json_object *sub = json_object_new_object();
    char topic[200], endpoint[128];
    snprintf(topic, sizeof topic, "projects/" PROJECT "/topics/%s", name);
    snprintf(endpoint, sizeof endpoint, "%s/", w->base_url);
    json_add_str(sub, "topic", topic);
    json_object *push = json_object_new_object();
    json_add_str(push, "pushEndpoint", endpoint);
    if (unwrapped) {
        json_object *nw = json_object_new_object();
        json_object_object_add(nw, "writeMetadata", json_object_new_boolean(1));
        json_object_object_add(push, "noWrapper", nw);
    }
    json_object_object_add(sub, "pushConfig", push);
    json_object_object_add(sub, "ackDeadlineSeconds", json_object_new_int(10));
    snprintf(path, sizeof path, "/v1/projects/" PROJECT "/subscriptions/%s-push", name);
    st = emu_http("PUT", path, json_object_to_json_string_ext(sub, JSON_C_TO_STRING_PLAIN), &answer);
    json_object_put(sub);
    emu_expect(st, "create subscription", answer, file, line);
    free(answer);
}

/* Publishes the fixture to topic NAME (attribute fixture=<rel>); id_out gets the emulator's messageId. */
#define PUBLISH_FIXTURE(topic, rel, id_out) publish_fixture((topic), (rel), (id_out), __FILE__, __LINE__)
static void publish_fixture(const char *topic, const char *rel, char id_out[64], const char *file, int line)
{
    size_t len;
    char *payload = pwt_read_fixture(rel, &len);
    char *data = pwt_base64(payload, len);
    json_object *msg = json_object_new_object();
    json_add_str(msg, "data", data);
    json_object *attrs = json_object_new_object();
    json_add_str(attrs, "fixture", rel);
    json_object_object_add(msg, "attributes", attrs);
    json_object *msgs = json_object_new_array();
    json_object_array_add(msgs, msg);
    json_object *req = json_object_new_object();
    json_object_object_add(req, "messages", msgs);
    char path[256], *answer = NULL;
    snprintf(path, sizeof path, "/v1/projects/" PROJECT "/topics/%s:publish", topic);
    long st = emu_http("POST", path, json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN), &answer);
    json_object_put(req);
    free(data);
    free(payload);
    emu_expect(st, "publish", answer, file, line);

    json_object *root = json_tokener_parse(answer), *ids = NULL;
    if (root == NULL || !json_object_object_get_ex(root, "messageIds", &ids) ||
        json_object_array_length(ids) != 1)
        pwt_fail(file, line, "publish: no messageIds in %s", answer);
    snprintf(id_out, 64, "%s", json_object_get_string(json_object_array_get_idx(ids, 0)));
    json_object_put(root);
    free(answer);
}

/* ---- waiting and checking ----------------------------------------------------------------------- */

/* Polls the test database until sql (a count) reaches want; fails after DELIVERY_TIMEOUT_MS. */
#define WAIT_FOR_COUNT(sql, want) wait_for_count((sql), (want), __FILE__, __LINE__)
static long long wait_for_count(const char *sql, long long want, const char *file, int line)
{
    long long t0 = now_ms(), got = -1;
    while (now_ms() - t0 < DELIVERY_TIMEOUT_MS) {
        got = pwt_scalar_int(sql);
        if (got >= want)
            return now_ms() - t0;
        sleep_ms(100);
    }
    print_tail("emulator log", emulator_log, 20);
    pwt_fail(file, line, "after %d ms, %s gives %lld, expected %lld", DELIVERY_TIMEOUT_MS, sql, got, want);
    return -1;
}

/* Replaces every "{name}" in tmpl by the value that follows it in the NULL-terminated pairs; malloc'd. */
static char *fill(const char *tmpl, ...)
{
    const char *names[16], *values[16];
    int n = 0;
    va_list ap;
    va_start(ap, tmpl);
    while (n < 16 && (names[n] = va_arg(ap, const char *)) != NULL)
        values[n++] = va_arg(ap, const char *);
    va_end(ap);
    char *out = NULL;
    size_t out_len = 0;
    FILE *f = open_memstream(&out, &out_len);
    for (const char *p = tmpl; *p;) {
        int hit = 0;
        for (int i = 0; i < n && !hit; i++) {
            size_t k = strlen(names[i]);
            if (*p == '{' && strncmp(p + 1, names[i], k) == 0 && p[1 + k] == '}') {
                fputs(values[i], f);
                p += k + 2;
                hit = 1;
            }
        }
        if (!hit)
            fputc(*p++, f);
    }
    fclose(f);
    return out;
}

/* ---- a private PostgreSQL cluster (for the test that stops it) ---------------------------------- */

static char pg_url[512];

/* The repository's root: PW_FIXTURES is <root>/tests/fixtures. Fills dev_db. */
static void find_dev_db(void)
{
    char fixtures[PATH_MAX], root[PATH_MAX + 16], real[PATH_MAX];
    const char *f = getenv("PW_FIXTURES");
    if (f == NULL || realpath(f, fixtures) == NULL)
        snprintf(fixtures, sizeof fixtures, "%s", "tests/fixtures");
    snprintf(root, sizeof root, "%s/../..", fixtures);
    snprintf(dev_db, sizeof dev_db, "%s/scripts/dev-db", realpath(root, real) != NULL ? real : root);
}

/* pg_ctl as the cluster's owner: `runuser -u postgres --` when root (as scripts/dev-db does). */
static int pg_ctl(const char *const *args)
{
    const char *argv[16];
    int n = 0;
    if (geteuid() == 0) {
        argv[n++] = "runuser";
        argv[n++] = "-u";
        argv[n++] = "postgres";
        argv[n++] = "--";
    }
    argv[n++] = PG_BIN "/pg_ctl";
    for (int i = 0; args[i] != NULL && n < 15; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    return run_cmd(argv, NULL, pg_cmd_log);
}

static void private_pg_stop(void)
{
    if (!pg_running)
        return;
    const char *argv[] = {dev_db, "stop", pg_dir, NULL};
    if (run_cmd(argv, NULL, pg_cmd_log) != 0) {
        fprintf(stderr, "emulator_test: `scripts/dev-db stop %s` failed\n", pg_dir);
        print_tail("dev-db/pg_ctl output", pg_cmd_log, 20);
    }
    pg_running = 0;
}

/* `scripts/dev-db start --fast work_dir/pg`; fills pg_url from its DATABASE_URL line. */
static int private_pg_start(void)
{
    char out[160];
    snprintf(out, sizeof out, "%s/dev-db-start.out", work_dir);
    const char *argv[] = {dev_db, "start", "--fast", pg_dir, NULL};
    pg_running = 1;
    int rc = run_cmd(argv, NULL, out);
    char *text = read_text(out);
    const char *line = strstr(text, "DATABASE_URL=");
    pg_url[0] = '\0';
    if (line != NULL)
        snprintf(pg_url, sizeof pg_url, "%.*s", (int)strcspn(line + 13, "\r\n"), line + 13);
    if (rc != 0 || pg_url[0] == '\0') {
        fprintf(stderr, "emulator_test: scripts/dev-db start %s failed (%d):\n%s\n", pg_dir, rc, text);
        free(text);
        return -1;
    }
    free(text);
    return 0;
}

/* Rows of sql on the private cluster, formatted like pwt_rows ('|' and '\n', NULL); NULL when unreachable. */
static char *private_rows(const char *sql)
{
    PGconn *c = PQconnectdb(pg_url);
    if (PQstatus(c) != CONNECTION_OK) {
        PQfinish(c);
        return NULL;
    }
    PQclear(PQexec(c, "SET TIME ZONE 'UTC'; SET DateStyle = 'ISO, YMD'"));
    PGresult *r = PQexec(c, sql);
    char *out = NULL;
    if (PQresultStatus(r) == PGRES_TUPLES_OK) {
        size_t len = 0;
        FILE *f = open_memstream(&out, &len);
        for (int i = 0; i < PQntuples(r); i++)
            for (int j = 0; j < PQnfields(r); j++)
                fprintf(f, "%s%s", j ? "|" : (i ? "\n" : ""), PQgetisnull(r, i, j) ? "NULL" : PQgetvalue(r, i, j));
        fclose(f);
    } else {
        fprintf(stderr, "private cluster: %s: %s", sql, PQerrorMessage(c));
    }
    PQclear(r);
    PQfinish(c);
    return out;
}

#define ASSERT_PRIVATE_ROWS(sql, expected) assert_private_rows((sql), (expected), __FILE__, __LINE__)
static void assert_private_rows(const char *sql, const char *expected, const char *file, int line)
{
    char *actual = private_rows(sql);
    if (actual == NULL || strcmp(actual, expected) != 0) {
        fprintf(stderr, "\n%s:%d: rows differ (private cluster)\n  query: %s\n---- expected ----\n%s\n---- actual ----\n%s\n",
                file, line, sql, expected, actual ? actual : "(query failed)");
        free(actual);
        pwt_fail(file, line, "rows differ (see above)");
    }
    free(actual);
}

/* ---- cleanup on every exit -------------------------------------------------------------------- */

/* Stops the emulator and the private cluster, and removes work_dir. Safe to call twice. */
static void cleanup(void)
{
    stop_emulator();
    private_pg_stop();
    if (work_dir[0] != '\0') {
        const char *rm[] = {"rm", "-rf", work_dir, NULL};
        run_cmd(rm, NULL, "/dev/null");
        work_dir[0] = '\0';
    }
}

#define SKIP_WITHOUT_EMULATOR()                                                                                       \
    do {                                                                                                              \
        if (!emulator_installed) {                                                                                    \
            printf("# " NOT_INSTALLED "\n");                                                                          \
            skip();                                                                                                   \
        }                                                                                                             \
        if (emulator_pid <= 0)                                                                                        \
            fail_msg("the Pub/Sub emulator is installed but not running (see the group setup's messages)");         \
    } while (0)

/* Every receipt of a subscription, with its publish time checked against the window it was published in. */
static char *receipts_sql(const char *subscription, long long published_from)
{
    char *sql = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&sql, &len);
    fprintf(f,
            "SELECT subscription, message_id, outcome,"
            "       publish_time BETWEEN to_timestamp(%lld) - interval '5 s' AND now() AS published_during_test"
            " FROM pubsub_receipts WHERE subscription = '%s' ORDER BY length(message_id), message_id",
            published_from, subscription);
    fclose(f);
    return sql;
}

/* ---- tests -------------------------------------------------------------------------------------- */

/*
 * (a) Wrapped pushes from the emulator: one wamid's sent/delivered/read published read first, an
 * inbound text, an AiSensy status and a template update: exact rows, receipts carrying the
 * subscription name and the emulator's messageIds.
 */
static void test_emulator_wrapped_pushes_in_any_order_become_exact_rows_and_receipts(void **state)
{
    (void)state;
    SKIP_WITHOUT_EMULATOR();
    pwt_worker_stop(&worker); /* a failed test's worker, if any */
    pwt_truncate_all();
    if (pwt_worker_start(&worker, NULL) != 0)
        fail_msg("worker did not start");
    MAKE_PUSH_SUBSCRIPTION("wrapped", &worker, 0);

    long long published_from = (long long)time(NULL);
    char read_id[64], sent_id[64], delivered_id[64], text_id[64], aisensy_id[64], template_id[64];
    PUBLISH_FIXTURE("wrapped", "meta/status_read.json", read_id);
    PUBLISH_FIXTURE("wrapped", "meta/status_sent.json", sent_id);
    PUBLISH_FIXTURE("wrapped", "meta/status_delivered.json", delivered_id);
    PUBLISH_FIXTURE("wrapped", "meta/text_with_contact.json", text_id);
    PUBLISH_FIXTURE("wrapped", "aisensy/status_delivered.json", aisensy_id);
    PUBLISH_FIXTURE("wrapped", "meta/template_status_update.json", template_id);
    long long ms = WAIT_FOR_COUNT("SELECT count(*) FROM pubsub_receipts", 6);
    printf("# 6 wrapped pushes delivered by the emulator: all committed %lld ms after the last publish\n", ms);

    char *sql = receipts_sql("projects/" PROJECT "/subscriptions/wrapped-push", published_from);
    char *want = fill("projects/pw-test/subscriptions/wrapped-push|{read}|stored|t\n"
                      "projects/pw-test/subscriptions/wrapped-push|{sent}|stored|t\n"
                      "projects/pw-test/subscriptions/wrapped-push|{delivered}|stored|t\n"
                      "projects/pw-test/subscriptions/wrapped-push|{text}|stored|t\n"
                      "projects/pw-test/subscriptions/wrapped-push|{aisensy}|stored|t\n"
                      "projects/pw-test/subscriptions/wrapped-push|{template}|ignored|t",
                      "read", read_id, "sent", sent_id, "delivered", delivered_id, "text", text_id, "aisensy",
                      aisensy_id, "template", template_id, NULL);
    pwt_assert_rows(sql, want);
    free(sql);
    free(want);

    pwt_assert_rows("SELECT bsp_msg_id, to_phone, whatsapp_status, current_status, last_error, created_at"
                    " FROM message_logs ORDER BY bsp_msg_id COLLATE \"C\"",
                    "wamid.HBgMOTE5ODEyMzQ1Njc4FQIAERgSQUlTRU5TWTAwMDAwMDAwMDAxAA==|+919812345678"
                    "|{\"sent\": \"2024-03-06T02:00:10Z\", \"delivered\": \"2024-03-06T02:00:10Z\"}|delivered|NULL"
                    "|2024-03-06 02:00:10+00\n"
                    "wamid.HBgMOTE5ODc2NTQzMjEwFQIAERgSQTFCMkMzRDRFNUY2QTdCOEM5AA==|+919876543210"
                    "|{\"read\": \"2024-03-05T20:01:00Z\", \"sent\": \"2024-03-05T20:00:00Z\","
                    " \"delivered\": \"2024-03-05T20:00:05Z\"}|read|NULL|2024-03-05 20:00:00+00");

    want = fill("wamid.HBgMOTE5ODEyMzQ1Njc4FQIAERgSQUlTRU5TWTAwMDAwMDAwMDAxAA==|delivered|2024-03-06 02:00:10+00"
                "|919812345678|NULL|NULL|NULL|NULL|NULL|{aisensy}\n"
                "wamid.HBgMOTE5ODc2NTQzMjEwFQIAERgSQTFCMkMzRDRFNUY2QTdCOEM5AA==|delivered|2024-03-05 20:00:05+00"
                "|919876543210|106540352242922|{\"id\": \"6ceb9d929c2a3e5e36d7d6a2b8ab7b2c\", \"origin\": {\"type\": \"marketing\"}}"
                "|{\"type\": \"regular\", \"billable\": true, \"category\": \"marketing\", \"pricing_model\": \"PMP\"}"
                "|NULL|NULL|{delivered}\n"
                "wamid.HBgMOTE5ODc2NTQzMjEwFQIAERgSQTFCMkMzRDRFNUY2QTdCOEM5AA==|read|2024-03-05 20:01:00+00"
                "|919876543210|106540352242922|NULL|NULL|NULL|NULL|{read}\n"
                "wamid.HBgMOTE5ODc2NTQzMjEwFQIAERgSQTFCMkMzRDRFNUY2QTdCOEM5AA==|sent|2024-03-05 20:00:00+00"
                "|919876543210|106540352242922|{\"id\": \"6ceb9d929c2a3e5e36d7d6a2b8ab7b2c\", \"origin\": {\"type\": \"marketing\"},"
                " \"expiration_timestamp\": \"1709755200\"}"
                "|{\"type\": \"regular\", \"billable\": true, \"category\": \"marketing\", \"pricing_model\": \"PMP\"}"
                "|NULL|campaign=spring24|{sent}",
                "aisensy", aisensy_id, "delivered", delivered_id, "read", read_id, "sent", sent_id, NULL);
    pwt_assert_rows("SELECT bsp_msg_id, status, occurred_at, recipient_id, phone_number_id, conversation, pricing,"
                    " errors, biz_opaque_callback_data, pubsub_message_id"
                    " FROM status_events ORDER BY bsp_msg_id COLLATE \"C\", status COLLATE \"C\"",
                    want);
    free(want);

    want = fill("wamid.HBgMOTE5ODEyMzQwMDAxFQIAEhggdGV4dF93aXRoX2NvbnRhY3QAA==|106540352242922|+919812340001|NULL"
                "|Priya Sharma|text|Hi! Is my order #4521 shipped? \xF0\x9F\x99\x8F|NULL|2024-03-06 00:00:00+00"
                "|wamid.HBgMOTE5ODEyMzQwMDAxFQIAEhggdGV4dF93aXRoX2NvbnRhY3QAA==|{text}",
                "text", text_id, NULL);
    pwt_assert_rows("SELECT wa_msg_id, phone_number_id, from_phone, from_user_id, contact_name, msg_type, body,"
                    " context_msg_id, sent_at, payload->>'id', pubsub_message_id FROM inbound_messages",
                    want);
    free(want);
    pwt_assert_rows("SELECT wa_id, profile_name, first_seen_at, last_seen_at FROM contacts ORDER BY wa_id",
                    "919812340001|Priya Sharma|2024-03-06 00:00:00+00|2024-03-06 00:00:00+00\n"
                    "919876543210|Neha Kulkarni|2024-03-05 20:01:00+00|2024-03-05 20:01:00+00");
    pwt_assert_rows("SELECT count(*) FROM dead_letters", "0");
    pwt_worker_stop(&worker);
}

/* (b) An unwrapped push subscription (noWrapper.writeMetadata): the body is the webhook, the receipt comes from the x-goog-pubsub-* headers. */
static void test_emulator_unwrapped_push_gets_its_receipt_from_the_metadata_headers(void **state)
{
    (void)state;
    SKIP_WITHOUT_EMULATOR();
    pwt_worker_stop(&worker); /* a failed test's worker, if any */
    pwt_truncate_all();
    if (pwt_worker_start(&worker, NULL) != 0)
        fail_msg("worker did not start");
    MAKE_PUSH_SUBSCRIPTION("unwrapped", &worker, 1);

    long long published_from = (long long)time(NULL);
    char failed_id[64];
    PUBLISH_FIXTURE("unwrapped", "meta/status_failed.json", failed_id);
    long long ms = WAIT_FOR_COUNT("SELECT count(*) FROM pubsub_receipts", 1);
    printf("# unwrapped push delivered by the emulator: committed %lld ms after the publish\n", ms);

    char *sql = receipts_sql("projects/" PROJECT "/subscriptions/unwrapped-push", published_from);
    char *want = fill("projects/pw-test/subscriptions/unwrapped-push|{id}|stored|t", "id", failed_id, NULL);
    pwt_assert_rows(sql, want);
    free(sql);
    free(want);

    static const char errors[] =
        "[{\"code\": 131049, \"href\": \"https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/\","
        " \"title\": \"This message was not delivered to maintain healthy ecosystem engagement.\","
        " \"message\": \"This message was not delivered to maintain healthy ecosystem engagement.\","
        " \"error_data\": {\"details\": \"In order to maintain a healthy ecosystem engagement, the message failed to be"
        " delivered.\"}}]";
    want = fill("wamid.HBgMOTE5ODc2NTQzMjExFQIAERgSRkFJTEVEMDAwMDAwMDAwMDAxAA==|+919876543211"
                "|{\"failed\": \"2024-03-05T20:05:00Z\"}|failed|{errors}|2024-03-05 20:05:00+00",
                "errors", errors, NULL);
    pwt_assert_rows("SELECT bsp_msg_id, to_phone, whatsapp_status, current_status, last_error, created_at FROM message_logs",
                    want);
    free(want);
    want = fill("wamid.HBgMOTE5ODc2NTQzMjExFQIAERgSRkFJTEVEMDAwMDAwMDAwMDAxAA==|failed|2024-03-05 20:05:00+00"
                "|919876543211|106540352242922|NULL|NULL|{errors}|NULL|{id}",
                "errors", errors, "id", failed_id, NULL);
    pwt_assert_rows("SELECT bsp_msg_id, status, occurred_at, recipient_id, phone_number_id, conversation, pricing,"
                    " errors, biz_opaque_callback_data, pubsub_message_id FROM status_events",
                    want);
    free(want);
    pwt_assert_rows("SELECT count(*) FROM dead_letters", "0");
    pwt_worker_stop(&worker);
}

/*
 * (c) Nack and redelivery: the worker's own PostgreSQL is stopped, a push arrives and is answered
 * 503, the emulator keeps redelivering it, the database comes back, and the push ends in exactly
 * one set of rows and one receipt.
 */
static void test_emulator_redelivers_a_push_nacked_with_503_while_the_database_is_down_into_one_set_of_rows(void **state)
{
    (void)state;
    SKIP_WITHOUT_EMULATOR();
    pwt_worker_stop(&worker); /* a failed test's worker, if any */
    long long t0 = now_ms();
    if (private_pg_start() != 0)
        fail_msg("could not start a private PostgreSQL cluster with scripts/dev-db");
    char dburl[600], log[300];
    snprintf(dburl, sizeof dburl, "DATABASE_URL=%s", pg_url);
    snprintf(log, sizeof log, "%s/migrate.log", work_dir);
    const char *migrate[] = {getenv("PW_WORKER"), "migrate", NULL};
    const char *menv[] = {dburl, NULL};
    if (run_cmd(migrate, menv, log) != 0) {
        print_tail("migrate log", log, 20);
        fail_msg("`worker migrate` failed on the private cluster");
    }

    const char *wenv[] = {dburl, "WORKER_THREADS=1", NULL};
    if (pwt_worker_start(&worker, wenv) != 0)
        fail_msg("worker did not start against the private cluster");
    MAKE_PUSH_SUBSCRIPTION("nacked", &worker, 0);

    char data_dir[300];
    snprintf(data_dir, sizeof data_dir, "%s/data", pg_dir);
    const char *stop[] = {"-D", data_dir, "-m", "immediate", "-w", "stop", NULL};
    if (pg_ctl(stop) != 0)
        fail_msg("pg_ctl stop failed");

    long long published_from = (long long)time(NULL);
    char id[64];
    PUBLISH_FIXTURE("nacked", "meta/statuses_batch.json", id);

    /* The worker must have refused it (and the emulator retried) before the database returns. */
    long long t_nack = now_ms();
    int nacks = 0;
    while (now_ms() - t_nack < DELIVERY_TIMEOUT_MS) {
        char *text = pwt_worker_log(&worker);
        nacks = count_substr(text, "push not committed, answered 503");
        free(text);
        if (nacks >= 2)
            break;
        sleep_ms(100);
    }
    if (nacks < 1)
        pwt_fail(__FILE__, __LINE__, "the worker never answered 503 while its database was down");
    printf("# database down: the worker answered 503 %d time(s) in %lld ms\n", nacks, now_ms() - t_nack);
    if (private_rows("SELECT 1") != NULL)
        fail_msg("the private cluster still answers after pg_ctl stop");

    char pg_log[300];
    snprintf(pg_log, sizeof pg_log, "%s/postgres.log", pg_dir);
    const char *start[] = {"-D", data_dir, "-l", pg_log, "-w", "-t", "30", "start", NULL};
    if (pg_ctl(start) != 0)
        fail_msg("pg_ctl start failed");

    long long t_up = now_ms();
    char *receipts = NULL;
    while (now_ms() - t_up < DELIVERY_TIMEOUT_MS) {
        free(receipts);
        receipts = private_rows("SELECT count(*) FROM pubsub_receipts");
        if (receipts != NULL && strcmp(receipts, "0") != 0)
            break;
        sleep_ms(100);
    }
    printf("# database back: the redelivered push was committed after %lld ms\n", now_ms() - t_up);
    if (receipts == NULL || strcmp(receipts, "0") == 0) {
        free(receipts);
        print_tail("emulator log", emulator_log, 20);
        pwt_fail(__FILE__, __LINE__, "no receipt %d ms after the database came back", DELIVERY_TIMEOUT_MS);
    }
    free(receipts);
    /* Give a late redelivery (one answered 503 just before the restart) the chance to show up twice. */
    sleep_ms(1500);

    char *sql = receipts_sql("projects/" PROJECT "/subscriptions/nacked-push", published_from);
    char *want = fill("projects/pw-test/subscriptions/nacked-push|{id}|stored|t", "id", id, NULL);
    ASSERT_PRIVATE_ROWS(sql, want);
    free(sql);
    free(want);
    ASSERT_PRIVATE_ROWS("SELECT count(*) FROM pubsub_receipts", "1");
    ASSERT_PRIVATE_ROWS("SELECT bsp_msg_id, to_phone, whatsapp_status, current_status, last_error, created_at"
                        " FROM message_logs ORDER BY bsp_msg_id COLLATE \"C\"",
                        "wamid.HBgMOTE5ODc2NTQzMjE0FQIAERgSQkFUQ0gwMDAwMDAwMDAwMDAxAA==|+919876543214"
                        "|{\"sent\": \"2024-03-05T21:00:00Z\", \"delivered\": \"2024-03-05T21:00:03Z\"}|delivered|NULL"
                        "|2024-03-05 21:00:00+00\n"
                        "wamid.HBgMOTE5ODc2NTQzMjE1FQIAERgSQkFUQ0gwMDAwMDAwMDAwMDAyAA==|+919876543215"
                        "|{\"sent\": \"2024-03-05T21:00:01Z\"}|sent|NULL|2024-03-05 21:00:01+00");
    want = fill("wamid.HBgMOTE5ODc2NTQzMjE0FQIAERgSQkFUQ0gwMDAwMDAwMDAwMDAxAA==|delivered|2024-03-05 21:00:03+00"
                "|919876543214|106540352242922|NULL|NULL|NULL|{id}\n"
                "wamid.HBgMOTE5ODc2NTQzMjE0FQIAERgSQkFUQ0gwMDAwMDAwMDAwMDAxAA==|sent|2024-03-05 21:00:00+00"
                "|919876543214|106540352242922|NULL"
                "|{\"type\": \"regular\", \"billable\": true, \"category\": \"marketing\", \"pricing_model\": \"PMP\"}|NULL|{id}\n"
                "wamid.HBgMOTE5ODc2NTQzMjE1FQIAERgSQkFUQ0gwMDAwMDAwMDAwMDAyAA==|sent|2024-03-05 21:00:01+00"
                "|919876543215|106540352242922|NULL|NULL|NULL|{id}",
                "id", id, NULL);
    ASSERT_PRIVATE_ROWS("SELECT bsp_msg_id, status, occurred_at, recipient_id, phone_number_id, conversation, pricing,"
                        " errors, pubsub_message_id FROM status_events ORDER BY bsp_msg_id COLLATE \"C\", status COLLATE \"C\"",
                        want);
    free(want);
    ASSERT_PRIVATE_ROWS("SELECT count(*) FROM dead_letters", "0");

    pwt_worker_stop(&worker);
    private_pg_stop();
    printf("# nack/redelivery test: %lld ms in all\n", now_ms() - t0);
}

/* ---- group setup -------------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    emulator_path = getenv("PWT_PUBSUB_EMULATOR") ? getenv("PWT_PUBSUB_EMULATOR") : EMULATOR_DEFAULT;
    emulator_installed = access(emulator_path, X_OK) == 0;
    if (!emulator_installed) {
        printf("# %s (%s not found)\n", NOT_INSTALLED, emulator_path);
        return 0;
    }

    atexit(cleanup);
    static const int fatal[] = {SIGINT, SIGTERM, SIGHUP, SIGSEGV, SIGABRT, SIGBUS, SIGFPE};
    for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++)
        signal(fatal[i], on_fatal_signal);

    /* 0755: as root, scripts/dev-db runs the cluster as `postgres`, who must reach work_dir/pg. */
    snprintf(work_dir, sizeof work_dir, "/tmp/pwt-emu-XXXXXX");
    if (mkdtemp(work_dir) == NULL || chmod(work_dir, 0755) != 0) {
        fprintf(stderr, "emulator_test: mkdtemp/chmod %s: %s\n", work_dir, strerror(errno));
        work_dir[0] = '\0';
        return -1;
    }
    snprintf(emulator_dir, sizeof emulator_dir, "%s/emulator", work_dir);
    snprintf(emulator_log, sizeof emulator_log, "%s/emulator.log", work_dir);
    snprintf(pg_dir, sizeof pg_dir, "%s/pg", work_dir);
    snprintf(pg_cmd_log, sizeof pg_cmd_log, "%s/pg.log", work_dir);
    find_dev_db();

    if (pwt_db_create("emulator") != 0 || pwt_migrate() != 0)
        return -1;
    if (start_emulator() != 0)
        fprintf(stderr, "emulator_test: the Pub/Sub emulator at %s did not start\n", emulator_path);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    cleanup();
    if (emulator_installed)
        pwt_db_drop();
    return 0;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_emulator_wrapped_pushes_in_any_order_become_exact_rows_and_receipts),
        cmocka_unit_test(test_emulator_unwrapped_push_gets_its_receipt_from_the_metadata_headers),
        cmocka_unit_test(test_emulator_redelivers_a_push_nacked_with_503_while_the_database_is_down_into_one_set_of_rows),
    };
    return cmocka_run_group_tests_name("emulator", tests, group_setup, group_teardown);
}
