#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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

tlm_status tlm_write_file_atomic(const char *path, const void *data, size_t n, tlm_error *err)
{
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    char *dircopy = strdup(path);
    if (!tmp || !dircopy) {
        free(tmp);
        free(dircopy);
        return tlm_fail(err, TLM_ERR_NOMEM, "out of memory");
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp.XXXXXX", 12);
    tlm_status st = TLM_OK;
    int fd = mkstemp(tmp);
    if (fd < 0) {
        st = tlm_fail(err, TLM_ERR_IO, "cannot create a temporary file beside %s: %s", path, strerror(errno));
        goto out;
    }
    const uint8_t *p = data;
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, p + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            st = tlm_fail(err, TLM_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
            break;
        }
        done += (size_t)w;
    }
    if (!st && fchmod(fd, 0644) != 0) st = tlm_fail(err, TLM_ERR_IO, "cannot set mode of %s: %s", tmp, strerror(errno));
    if (!st && fsync(fd) != 0) st = tlm_fail(err, TLM_ERR_IO, "cannot sync %s: %s", tmp, strerror(errno));
    if (close(fd) != 0 && !st) st = tlm_fail(err, TLM_ERR_IO, "cannot close %s: %s", tmp, strerror(errno));
    if (!st && rename(tmp, path) != 0) st = tlm_fail(err, TLM_ERR_IO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
    if (st) {
        unlink(tmp);
        goto out;
    }
    int dfd = open(dirname(dircopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
out:
    free(tmp);
    free(dircopy);
    return st;
}
