#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"

/* Opens a regular file for reading and tells its size. */
static tlm_status open_regular(const char *path, int *fd_out, size_t *size, tlm_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return tlm_fail(err, TLM_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return tlm_fail(err, TLM_ERR_IO, "%s is not a regular file", path);
    }
    *fd_out = fd;
    *size = (size_t)st.st_size;
    return TLM_OK;
}

tlm_status tlm_read_file(const char *path, uint8_t **data, size_t *bytes, tlm_error *err)
{
    int fd;
    size_t n;
    tlm_status status = open_regular(path, &fd, &n, err);
    if (status) return status;
    uint8_t *buf = malloc(n + 1);
    if (!buf) {
        close(fd);
        return tlm_fail(err, TLM_ERR_NOMEM, "cannot allocate %llu bytes for %s", (unsigned long long)n, path);
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            free(buf);
            close(fd);
            return tlm_fail(err, TLM_ERR_IO, "cannot read %s: %s", path, r < 0 ? strerror(errno) : "file shrank");
        }
        got += (size_t)r;
    }
    close(fd);
    buf[n] = 0;
    *data = buf;
    *bytes = n;
    return TLM_OK;
}

/* Refuses text with a NUL byte, freeing it. */
static tlm_status no_nul(const char *path, uint8_t **data, size_t *bytes, tlm_error *err)
{
    const uint8_t *nul = memchr(*data, 0, *bytes);
    if (nul) {
        const size_t at = (size_t)(nul - *data);
        free(*data);
        *data = NULL;
        return tlm_fail(err, TLM_ERR_FORMAT, "%s: byte %llu is NUL: expected UTF-8 text (is the file UTF-16, or binary?)",
                        path, (unsigned long long)at);
    }
    return TLM_OK;
}

tlm_status tlm_read_text(const char *path, uint8_t **data, size_t *bytes, tlm_error *err)
{
    tlm_status st = tlm_read_file(path, data, bytes, err);
    return st ? st : no_nul(path, data, bytes, err);
}

tlm_status tlm_read_stream(FILE *f, const char *name, uint8_t **data, size_t *bytes, tlm_error *err)
{
    size_t cap = 1 << 16, len = 0;
    uint8_t *buf = malloc(cap + 1);
    for (;;) {
        if (buf && len == cap) {
            uint8_t *grown = cap < SIZE_MAX / 4 ? realloc(buf, cap * 2 + 1) : NULL;
            if (grown) cap *= 2;
            else free(buf);
            buf = grown;
        }
        if (!buf) return tlm_fail(err, TLM_ERR_NOMEM, "out of memory reading %s", name);
        const size_t k = fread(buf + len, 1, cap - len, f);
        if (!k) break;
        len += k;
    }
    if (ferror(f)) {
        free(buf);
        return tlm_fail(err, TLM_ERR_IO, "cannot read %s", name);
    }
    buf[len] = 0;
    *data = buf;
    *bytes = len;
    return TLM_OK;
}

tlm_status tlm_map_file(const char *path, tlm_mapped *map, tlm_error *err)
{
    map->addr = NULL;
    map->bytes = 0;
    int fd;
    size_t n;
    tlm_status status = open_regular(path, &fd, &n, err);
    if (status) return status;
    if (n == 0) {
        close(fd);
        return tlm_fail(err, TLM_ERR_TRUNCATED, "%s is empty", path);
    }
    void *a = mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (a == MAP_FAILED) return tlm_fail(err, TLM_ERR_IO, "cannot map %s: %s", path, strerror(errno));
    map->addr = a;
    map->bytes = n;
    return TLM_OK;
}

void tlm_unmap_file(tlm_mapped *map)
{
    if (map->addr) munmap(map->addr, map->bytes);
    map->addr = NULL;
    map->bytes = 0;
}

tlm_status tlm_atomic_open(tlm_atomic_file *a, const char *path, tlm_error *err)
{
    a->f = NULL;
    a->path = path;
    a->secret = 0;
    const size_t plen = strlen(path);
    a->tmp = malloc(plen + 12);
    if (!a->tmp) return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    memcpy(a->tmp, path, plen);
    memcpy(a->tmp + plen, ".tmp.XXXXXX", 12);
    const int fd = mkstemp(a->tmp);
    if (fd >= 0) a->f = fdopen(fd, "wb");
    if (!a->f) {
        const int e = errno;
        if (fd >= 0) {
            close(fd);
            unlink(a->tmp);
        }
        free(a->tmp);
        a->tmp = NULL;
        return tlm_fail(err, TLM_ERR_IO, "cannot create a temporary file beside %s: %s", path, strerror(e));
    }
    return TLM_OK;
}

void tlm_atomic_abort(tlm_atomic_file *a)
{
    if (a->f) fclose(a->f);
    if (a->tmp) unlink(a->tmp);
    free(a->tmp);
    a->f = NULL;
    a->tmp = NULL;
}

tlm_status tlm_atomic_commit(tlm_atomic_file *a, tlm_error *err)
{
    tlm_status st = TLM_OK;
    const int fd = fileno(a->f);
    errno = 0;
    if (fflush(a->f) != 0 || ferror(a->f))
        st = tlm_fail(err, TLM_ERR_IO, "cannot write %s: %s", a->tmp, errno ? strerror(errno) : "stream error");
    if (!st && fchmod(fd, a->secret ? 0600 : 0644) != 0) st = tlm_fail(err, TLM_ERR_IO, "cannot set mode of %s: %s", a->tmp, strerror(errno));
    if (!st && fsync(fd) != 0) st = tlm_fail(err, TLM_ERR_IO, "cannot sync %s: %s", a->tmp, strerror(errno));
    const int closed = fclose(a->f);
    a->f = NULL;
    if (closed != 0 && !st) st = tlm_fail(err, TLM_ERR_IO, "cannot close %s: %s", a->tmp, strerror(errno));
    if (!st && a->secret) { /* link() fails on an existing target, where rename() would replace it */
        if (link(a->tmp, a->path) != 0)
            st = tlm_fail(err, TLM_ERR_IO, "cannot create %s: %s", a->path,
                          errno == EEXIST ? "it exists (a secret is never overwritten)" : strerror(errno));
        else
            unlink(a->tmp);
    } else if (!st && rename(a->tmp, a->path) != 0)
        st = tlm_fail(err, TLM_ERR_IO, "cannot rename %s to %s: %s", a->tmp, a->path, strerror(errno));
    if (st) {
        tlm_atomic_abort(a);
        return st;
    }
    free(a->tmp);
    a->tmp = NULL;
    char *dircopy = strdup(a->path);
    if (dircopy) {
        const int dfd = open(dirname(dircopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            (void)fsync(dfd);
            close(dfd);
        }
        free(dircopy);
    }
    return TLM_OK;
}

static tlm_status write_whole(const char *path, const void *data, size_t n, int secret, tlm_error *err)
{
    tlm_atomic_file a;
    tlm_status st = tlm_atomic_open(&a, path, err);
    if (st) return st;
    a.secret = secret;
    if (n > 0 && fwrite(data, 1, n, a.f) != n) {
        st = tlm_fail(err, TLM_ERR_IO, "cannot write %s: %s", a.tmp, strerror(errno));
        tlm_atomic_abort(&a);
        return st;
    }
    return tlm_atomic_commit(&a, err);
}

tlm_status tlm_write_file_atomic(const char *path, const void *data, size_t n, tlm_error *err)
{
    return write_whole(path, data, n, 0, err);
}

tlm_status tlm_write_secret_atomic(const char *path, const void *data, size_t n, tlm_error *err)
{
    return write_whole(path, data, n, 1, err);
}

tlm_status tlm_temp_dir(char *dir, size_t cap, const char *prefix, tlm_error *err)
{
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp) tmp = "/tmp";
    const int n = snprintf(dir, cap, "%s/%s-XXXXXX", tmp, prefix);
    if (n < 0 || (size_t)n >= cap) return tlm_fail(err, TLM_ERR_ARG, "the temporary directory's path is too long");
    if (!mkdtemp(dir)) return tlm_fail(err, TLM_ERR_IO, "cannot make a temporary directory in %s: %s", tmp, strerror(errno));
    return TLM_OK;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int tlm_remove_tree(const char *dir)
{
    return nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int tlm_lock_beside(const char *path, tlm_error *err)
{
    const size_t n = strlen(path);
    char *lock = malloc(n + 6);
    if (!lock) {
        tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
        return -1;
    }
    memcpy(lock, path, n);
    memcpy(lock + n, ".lock", 6);
    const int fd = open(lock, O_RDWR | O_CREAT, 0644);
    if (fd < 0) {
        tlm_fail(err, TLM_ERR_IO, "cannot open the lock %s: %s", lock, strerror(errno));
        free(lock);
        return -1;
    }
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    int r;
    while ((r = fcntl(fd, F_SETLKW, &fl)) != 0 && errno == EINTR) {}
    if (r) {
        tlm_fail(err, TLM_ERR_IO, "cannot lock %s: %s", lock, strerror(errno));
        close(fd);
        free(lock);
        return -1;
    }
    free(lock);
    return fd;
}

tlm_status tlm_require_private(const char *path, const char *what, tlm_error *err)
{
    struct stat sb;
    if (stat(path, &sb) == 0 && (sb.st_mode & 077)) {
        char mode[16]; /* the core's formatter has no %o */
        snprintf(mode, sizeof mode, "%03o", (unsigned)(sb.st_mode & 0777));
        return tlm_fail(err, TLM_ERR_ARG, "%s can be read by others (mode %s): %s must be private (chmod 600 %s)", path,
                        mode, what, path);
    }
    return TLM_OK;
}
