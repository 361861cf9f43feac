/* SPDX-License-Identifier: Apache-2.0 */
/* A test-only SQLite VFS in the manner of SQLite's crash VFS (src/test6.c) and test VFS
 * (src/test_vfs.c): it wraps the default unix VFS, counts every xWrite, xSync and xTruncate
 * of the named files (database, -wal, rollback journal) across files, and at a chosen op
 * either cuts the power or fails the op.
 *
 * Power model: the kernel's page cache stands for the disk. What a file held at its last
 * xSync survives; every write and truncate since then is unsynced, and the VFS keeps the
 * old contents of each 512-byte sector it touched (an undo log), so a cut can take them
 * back. xSync itself does not call fsync: nothing here needs real durability, and the
 * tests stay fast. At the cut the VFS leaves each file as a power failure could have, either
 * every unsynced sector lost or a random (seeded) subset of them kept, deletes the -shm
 * (the wal-index lives in memory; the unix VFS rebuilds it), and calls _exit: run the code
 * under test in a forked child and check the files from the parent with the normal VFS.
 *
 * Faults: the op at a chosen count (or every op of a kind from there until cleared, as a
 * full disk) returns a chosen SQLite error instead of reaching the file.
 *
 * One process, one thread: the state is global, as the VFS is. */
#ifndef KP_TEST_CRASHVFS_H
#define KP_TEST_CRASHVFS_H

#include <stddef.h>
#include <stdint.h>

#define CRASHVFS_NAME "kippu-crash"

enum crashvfs_op { CRASHVFS_WRITE = 1, CRASHVFS_SYNC = 2, CRASHVFS_TRUNCATE = 3 };
enum crashvfs_role { CRASHVFS_DB = 1, CRASHVFS_WAL = 2, CRASHVFS_JOURNAL = 3 };

/* One counted op, in order (op 1 is trace[0]); phase is the caller's label at the time. */
struct crashvfs_trace {
	uint8_t op;                      /* enum crashvfs_op */
	uint8_t role;                    /* enum crashvfs_role */
	uint8_t phase;
};

/* Registers the VFS over the current default (make_default: as the new default, so code
 * that opens SQLite files by name runs over it unchanged). SQLITE_OK or an SQLite error. */
int crashvfs_register(int make_default);
/* Unregisters it (the unix VFS is the default again) and forgets all state. */
void crashvfs_unregister(void);
/* Forgets counts, trace, plans and undo logs (files' current contents count as synced). */
void crashvfs_reset(void);

/* Ops counted so far. */
uint64_t crashvfs_ops(void);
/* The label stored with the next ops' trace records. */
void crashvfs_phase(uint8_t phase);
/* The trace since the last reset; *n gets its length. */
const struct crashvfs_trace *crashvfs_trace(size_t *n);
/* The count of the nth (1-based; 0 = the last) op of kind op on role among ops from+1..to
 * in the trace; 0 if there is none. */
uint64_t crashvfs_find(uint64_t from, uint64_t to, enum crashvfs_op op, enum crashvfs_role role,
                       unsigned nth);

/* At op number at (counted from 1), the power fails: a write or truncate there is done
 * first (it is torn with the rest), a sync is not. keep_random 0: every unsynced sector
 * is lost; 1: each is kept or lost at random from seed, and so is each file's size.
 * The process then ends with _exit(exit_code). */
void crashvfs_cut_at(uint64_t at, int keep_random, unsigned seed, int exit_code);

/* From op number at, the next count ops of kind op (0: of any kind; count 0: every one
 * until crashvfs_fail_clear) fail with rc (an SQLite code such as SQLITE_IOERR_WRITE or
 * SQLITE_FULL) and change nothing. */
void crashvfs_fail_at(uint64_t at, enum crashvfs_op op, int rc, unsigned count);
void crashvfs_fail_clear(void);
/* How many ops have failed since the last reset. */
unsigned crashvfs_failed(void);

#endif
