#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proc.h"

/* Reads fd to its end into a malloc'd, NUL-terminated buffer (NULL when out
 * of memory: the rest is drained so that the writer is not left blocked). */
static char *read_all(int fd)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap), sink[512];
    for (;;) {
        if (buf && n + 1 >= cap) {
            char *b = realloc(buf, cap * 2);
            if (!b) {
                free(buf);
                buf = NULL;
            } else {
                buf = b;
                cap *= 2;
            }
        }
        const ssize_t r = buf ? read(fd, buf + n, cap - n - 1) : read(fd, sink, sizeof sink);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        if (buf) n += (size_t)r;
    }
    if (buf) buf[n] = 0;
    return buf;
}

int tlm_run(char *const argv[], char **out, int quiet)
{
    int fd[2] = {-1, -1};
    if (out) {
        *out = NULL;
        if (pipe(fd)) return -1;
    }
    const pid_t pid = fork();
    if (pid < 0) {
        if (out) {
            close(fd[0]);
            close(fd[1]);
        }
        return -1;
    }
    if (pid == 0) {
        if (out) {
            dup2(fd[1], STDOUT_FILENO);
            close(fd[0]);
            close(fd[1]);
        }
        if (quiet) {
            const int devnull = open("/dev/null", O_WRONLY);
            if (devnull >= 0) dup2(devnull, STDERR_FILENO);
        }
        execvp(argv[0], argv);
        _exit(127);
    }
    if (out) {
        close(fd[1]);
        *out = read_all(fd[0]);
        close(fd[0]);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}
