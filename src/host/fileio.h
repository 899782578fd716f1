/* Host file helpers: whole-file reads, read-only maps, atomic writes. */
#ifndef TLM_HOST_FILEIO_H
#define TLM_HOST_FILEIO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tritlm/status.h"

/* Reads a whole file into a malloc'd buffer (NUL-terminated for text
 * convenience; the terminator is not counted in *bytes). */
tlm_status tlm_read_file(const char *path, uint8_t **data, size_t *bytes, tlm_error *err);

/* tlm_read_file for text the tools train or evaluate on: refuses a file
 * with a NUL byte (UTF-16 or binary data, which would otherwise be read
 * as garbage bytes), naming its offset. */
tlm_status tlm_read_text(const char *path, uint8_t **data, size_t *bytes, tlm_error *err);

/* All of a stream (stdin: a pipe, a terminal) into a malloc'd buffer,
 * NUL-terminated (the terminator not counted); any bytes, NUL included. */
tlm_status tlm_read_stream(FILE *f, const char *name, uint8_t **data, size_t *bytes, tlm_error *err);

typedef struct tlm_mapped {
    void *addr;
    size_t bytes;
} tlm_mapped;

/* Maps a file read-only (page-aligned, so usable as a model image). */
tlm_status tlm_map_file(const char *path, tlm_mapped *map, tlm_error *err);
void tlm_unmap_file(tlm_mapped *map);

/* Writes `n` bytes to `path` atomically: a temporary file in the same
 * directory, fsync, rename over the target, fsync of the directory. A
 * crash leaves either the old file or the new one, never a mix. */
tlm_status tlm_write_file_atomic(const char *path, const void *data, size_t n, tlm_error *err);

/* The same for output written piece by piece: tlm_atomic_open creates the
 * temporary file and gives its stream in a->f; tlm_atomic_commit flushes,
 * syncs and renames it over the target (and reports any earlier write
 * error of the stream); tlm_atomic_abort removes it. Exactly one of the
 * two ends every successful open. */
typedef struct tlm_atomic_file {
    FILE *f;
    char *tmp;
    const char *path;
    int secret; /* set after open: mode 0600, and the commit never replaces an existing file */
} tlm_atomic_file;

tlm_status tlm_atomic_open(tlm_atomic_file *a, const char *path, tlm_error *err);
tlm_status tlm_atomic_commit(tlm_atomic_file *a, tlm_error *err);
void tlm_atomic_abort(tlm_atomic_file *a);

/* tlm_write_file_atomic for a secret (a private key): readable by its
 * owner only, and refused if path exists (a secret is never overwritten:
 * the old one may be the only copy). */
tlm_status tlm_write_secret_atomic(const char *path, const void *data, size_t n, tlm_error *err);

/* Refuses (TLM_ERR_ARG) a file that its group or others may read: a secret
 * (what: "a secret key", "a password") must be private, as ssh requires of
 * its keys. A file that cannot be examined passes; reading it will say why. */
tlm_status tlm_require_private(const char *path, const char *what, tlm_error *err);

/* Runs that share a file they read, change and write back (a privacy
 * ledger) take turns: an exclusive lock on PATH.lock (a file that is never
 * replaced, unlike PATH, which is renamed over) held from reading to
 * writing back, so that two runs cannot both start from the same contents
 * and lose one's change. Returns the lock's descriptor (closing it
 * releases the lock) or -1. */
int tlm_lock_beside(const char *path, tlm_error *err);

/* A new private directory $TMPDIR/PREFIX-XXXXXX (/tmp without TMPDIR) for
 * work that must not outlive the command; its path goes to dir (cap
 * bytes). tlm_remove_tree deletes it and all it holds (0 on success). */
tlm_status tlm_temp_dir(char *dir, size_t cap, const char *prefix, tlm_error *err);
int tlm_remove_tree(const char *dir);

#endif
