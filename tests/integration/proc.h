/* Child processes for integration tests: run a command with its output in a file or captured, wait, stop a process group. */
#ifndef PWT_PROC_H
#define PWT_PROC_H

#include <sys/types.h>

/* Flags of pwt_spawn. */
#define PWT_SPAWN_GROUP 1 /* the child leads a process group of its own (stop it with pwt_stop_group) */
#define PWT_SPAWN_TRUNC 2 /* out_path is truncated first (default: appended to) */

/**
 * Starts argv (argv[0] searched in PATH) with cwd "/", stdin /dev/null, stdout and stderr to out_path,
 * no descriptor of ours but those, and env ("NAME=value", NULL-terminated, may be NULL) added to ours.
 * Does not wait. Returns the pid, or -1.
 */
pid_t pwt_spawn(const char *const *argv, const char *const *env, const char *out_path, int flags);

/* In a forked child: stdout and stderr to out_path (PWT_SPAWN_TRUNC in flags: truncated first), stdin /dev/null, every other
 * descriptor closed. For children that need more than pwt_spawn does before their exec. */
void pwt_child_redirect(const char *out_path, int flags);
/* The same with an open descriptor (fd < 0: stdout and stderr left as they are). */
void pwt_child_redirect_fd(int fd);

/* A wait status as one number: the exit status, 128 + signal when killed by one, -1 otherwise. */
int pwt_exit_code(int wstatus);

/* Waits for pid (resuming after signals); its pwt_exit_code, or -1. */
int pwt_wait(pid_t pid);

/* 1 when pid has ended (its exit code in *code), 0 while it runs. */
int pwt_reap(pid_t pid, int *code);

/* pwt_spawn then pwt_wait: the command's exit code, or -1. While it runs, pwt_running_child() names it. */
int pwt_run(const char *const *argv, const char *const *env, const char *out_path);

/* The child pwt_run is waiting for (0: none), for a fatal-signal handler to kill. */
pid_t pwt_running_child(void);

/* Runs argv (PATH searched) with stdout captured into *out (malloc'd, trailing newlines cut) and stderr appended to err_path. Exit
 * code, or -1. */
int pwt_run_capture(const char *const *argv, const char *err_path, char **out);

/* Runs the shell command cmd (popen) and reads all of its stdout into *out (malloc'd); its exit status, or -1. */
int pwt_popen_read(const char *cmd, char **out);

/* s quoted for sh ('...'), malloc'd. */
char *pwt_shell_quote(const char *s);

/* Sends SIGTERM to the process group pid, waits up to grace_ms for its leader, then SIGKILLs the group. */
void pwt_stop_group(pid_t pid, long grace_ms);

/* Runs argv[0] (a path) and waits, output to /dev/null, with async-signal-safe calls only: for fatal-signal handlers. */
void pwt_run_in_handler(char *const *argv);

/* `rm -rf dir` (a test's scratch directory); 0 or -1. */
int pwt_rm_rf(const char *dir);

#endif
