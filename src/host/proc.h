/* Running another program (QEMU's build script, gnuplot) without a shell,
 * so that file names with spaces or quotes pass as they are. */
#ifndef TLM_HOST_PROC_H
#define TLM_HOST_PROC_H

/* Runs argv (argv[0] searched in PATH), waits for it and returns its exit
 * status, or -1 if it could not run or did not exit normally. out: if not
 * NULL, receives its stdout (malloc'd, NUL-terminated; NULL when out of
 * memory), else stdout is shared. quiet: its stderr goes to /dev/null. */
int tlm_run(char *const argv[], char **out, int quiet);

#endif
