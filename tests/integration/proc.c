/* Child processes for integration tests: run a command with its output in a file or captured, wait, stop a process group. */
#include "tests/integration/proc.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/integration/util.h"

static volatile pid_t running_child;

/* In a forked child: closes every descriptor above stderr, so nothing of ours leaks into it. */
static void close_inherited_fds(void)
{
    long max = sysconf(_SC_OPEN_MAX);
    for (int fd = 3; fd < (max > 0 && max < 65536 ? max : 65536); fd++)
        close(fd);
}

void pwt_child_redirect_fd(int fd)
{
    if (fd >= 0) {
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
    }
    int dn = open("/dev/null", O_RDONLY);
    if (dn >= 0)
        dup2(dn, STDIN_FILENO);
    close_inherited_fds();
}

void pwt_child_redirect(const char *out_path, int flags)
{
    pwt_child_redirect_fd(open(out_path, O_WRONLY | O_CREAT | (flags & PWT_SPAWN_TRUNC ? O_TRUNC : O_APPEND), 0644));
}

pid_t pwt_spawn(const char *const *argv, const char *const *env, const char *out_path, int flags)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (flags & PWT_SPAWN_GROUP)
            setpgid(0, 0);
        pwt_child_redirect(out_path, flags);
        if (chdir("/") != 0)
            _exit(126);
        for (size_t i = 0; env != NULL && env[i] != NULL; i++)
            putenv((char *)env[i]);
        execvp(argv[0], (char *const *)argv);
        dprintf(STDERR_FILENO, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    if (pid > 0 && (flags & PWT_SPAWN_GROUP))
        setpgid(pid, pid); /* also from here, so the group exists before any kill */
    return pid;
}

int pwt_exit_code(int wstatus)
{
    if (WIFEXITED(wstatus))
        return WEXITSTATUS(wstatus);
    if (WIFSIGNALED(wstatus))
        return 128 + WTERMSIG(wstatus);
    return -1;
}

int pwt_wait(pid_t pid)
{
    if (pid <= 0)
        return -1;
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    return pwt_exit_code(st);
}

int pwt_reap(pid_t pid, int *code)
{
    int st;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == 0)
        return 0;
    *code = r == pid ? pwt_exit_code(st) : -1;
    return 1;
}

int pwt_run(const char *const *argv, const char *const *env, const char *out_path)
{
    pid_t pid = pwt_spawn(argv, env, out_path, 0);
    if (pid < 0)
        return -1;
    running_child = pid;
    int code = pwt_wait(pid);
    running_child = 0;
    return code;
}

pid_t pwt_running_child(void)
{
    return running_child;
}

/* Everything readable from fd until EOF, malloc'd and NUL-terminated; *len gets its length. */
static char *read_all(int fd, size_t *len_out)
{
    size_t cap = 4096, len = 0;
    char *buf = pwt_xmalloc(cap);
    for (;;) {
        if (cap - len < 1024)
            buf = pwt_xrealloc(buf, cap *= 2);
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    *len_out = len;
    return buf;
}

int pwt_run_capture(const char *const *argv, const char *err_path, char **out)
{
    int pfd[2];
    if (pipe(pfd) != 0)
        return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pfd[1], STDOUT_FILENO);
        int e = open(err_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (e >= 0)
            dup2(e, STDERR_FILENO);
        int dn = open("/dev/null", O_RDONLY);
        if (dn >= 0)
            dup2(dn, STDIN_FILENO);
        close_inherited_fds();
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(pfd[1]);
    size_t len;
    char *buf = read_all(pfd[0], &len);
    close(pfd[0]);
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        buf[--len] = '\0';
    int code = pwt_wait(pid);
    if (out != NULL)
        *out = buf;
    else
        free(buf);
    return code;
}

int pwt_popen_read(const char *cmd, char **out)
{
    fflush(NULL);
    FILE *f = popen(cmd, "r");
    if (f == NULL) {
        *out = pwt_xstrdup("");
        return -1;
    }
    size_t len;
    *out = read_all(fileno(f), &len);
    int status = pclose(f);
    return status != -1 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

char *pwt_shell_quote(const char *s)
{
    size_t n = 3;
    for (const char *q = s; *q; q++)
        n += *q == '\'' ? 4 : 1;
    char *out = pwt_xmalloc(n), *o = out;
    *o++ = '\'';
    for (const char *q = s; *q; q++) {
        if (*q == '\'') {
            memcpy(o, "'\\''", 4);
            o += 4;
        } else {
            *o++ = *q;
        }
    }
    *o++ = '\'';
    *o = '\0';
    return out;
}

void pwt_stop_group(pid_t pid, long grace_ms)
{
    if (pid <= 0)
        return;
    kill(-pid, SIGTERM);
    long long deadline = pwt_now_ms() + grace_ms;
    int code;
    int ended;
    while (!(ended = pwt_reap(pid, &code)) && pwt_now_ms() < deadline)
        pwt_sleep_ms(10);
    kill(-pid, SIGKILL); /* whatever is left of the group */
    if (!ended)
        waitpid(pid, NULL, 0);
}

void pwt_run_in_handler(char *const *argv)
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

int pwt_rm_rf(const char *dir)
{
    const char *argv[] = {"rm", "-rf", dir, NULL};
    return pwt_run(argv, NULL, "/dev/null");
}
