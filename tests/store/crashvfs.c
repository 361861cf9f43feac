/* SPDX-License-Identifier: Apache-2.0 */
/* The crash and fault VFS of the power-cut tests (see crashvfs.h for the model). */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "crashvfs.h"

#define SECTOR 512

/* A sector as it was at its file's last sync, saved before its first write since. */
struct undo {
	int64_t sector;
	int had;                         /* it lay inside the file at that sync */
	unsigned char old[SECTOR];
};

/* What the VFS knows of one file by name. It outlives the file's handles: SQLite closes
 * a file (the -wal after a checkpoint) whose writes may not all be synced. */
struct node {
	char *path;
	int role;
	int64_t synced_size;
	uint8_t *saved;                  /* bitmap: sector already in the undo log */
	size_t saved_cap;                /* bytes */
	struct undo *undo;
	size_t n_undo, cap_undo;
	struct node *next;
};

struct cfile {
	sqlite3_file base;
	struct node *node;               /* NULL: a temporary file, passed through uncounted */
	sqlite3_file *real;              /* the unix VFS's file, right after this struct */
};

static struct {
	sqlite3_vfs vfs;
	sqlite3_vfs *real;
	int registered;
	struct node *nodes;
	uint64_t ops;
	uint8_t phase;
	struct crashvfs_trace *trace;
	size_t n_trace, cap_trace;
	uint64_t cut_at;                 /* 0: no cut planned */
	int keep_random;
	uint32_t rnd;
	int exit_code;
	uint64_t fail_at;                /* 0: no fault planned */
	int fail_op, fail_rc;
	unsigned fail_left;              /* 0 with fail_at set: until cleared */
	unsigned failed;
} cv;

static int64_t file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (int64_t)st.st_size : 0;
}

static struct node *node_get(const char *path, int role)
{
	struct node *n;

	for (n = cv.nodes; n != NULL; n = n->next) {
		if (strcmp(n->path, path) == 0)
			return n;
	}
	n = calloc(1, sizeof(*n));
	if (n == NULL || (n->path = strdup(path)) == NULL) {
		free(n);
		return NULL;
	}
	n->role = role;
	n->synced_size = file_size(path);
	n->next = cv.nodes;
	cv.nodes = n;
	return n;
}

/* What is on the file now is what a power cut would leave of it. */
static void node_synced(struct node *n, int64_t size)
{
	n->synced_size = size;
	n->n_undo = 0;
	if (n->saved != NULL)
		memset(n->saved, 0, n->saved_cap);
}

static void node_free(struct node *n)
{
	free(n->path);
	free(n->saved);
	free(n->undo);
	free(n);
}

static void node_drop(const char *path)
{
	for (struct node **pp = &cv.nodes; *pp != NULL; pp = &(*pp)->next) {
		if (strcmp((*pp)->path, path) == 0) {
			struct node *n = *pp;

			*pp = n->next;
			node_free(n);
			return;
		}
	}
}

/* Keeps the sector's contents as of the last sync, once per sync interval. */
static int save_sector(struct cfile *p, int64_t s)
{
	struct node *n = p->node;
	size_t byte = (size_t)(s / 8);
	struct undo *u;
	int rc;

	if (byte >= n->saved_cap) {
		size_t cap = (byte + 1) * 2;
		uint8_t *b = realloc(n->saved, cap);

		if (b == NULL)
			return SQLITE_NOMEM;
		memset(b + n->saved_cap, 0, cap - n->saved_cap);
		n->saved = b;
		n->saved_cap = cap;
	}
	if (n->saved[byte] & (1u << (s % 8)))
		return SQLITE_OK;
	if (n->n_undo == n->cap_undo) {
		size_t cap = n->cap_undo != 0 ? n->cap_undo * 2 : 64;
		struct undo *v = realloc(n->undo, cap * sizeof(*v));

		if (v == NULL)
			return SQLITE_NOMEM;
		n->undo = v;
		n->cap_undo = cap;
	}
	u = &n->undo[n->n_undo];
	u->sector = s;
	u->had = s * SECTOR < n->synced_size;
	/* Past the end the unix VFS zero-fills and says SHORT_READ: zeros are right there. */
	rc = p->real->pMethods->xRead(p->real, u->old, SECTOR, s * SECTOR);
	if (rc != SQLITE_OK && rc != SQLITE_IOERR_SHORT_READ)
		return rc;
	n->n_undo++;
	n->saved[byte] |= (uint8_t)(1u << (s % 8));
	return SQLITE_OK;
}

static int save_range(struct cfile *p, int64_t off, int64_t len)
{
	int rc = SQLITE_OK;

	for (int64_t s = off / SECTOR; len > 0 && s <= (off + len - 1) / SECTOR && rc == SQLITE_OK; s++)
		rc = save_sector(p, s);
	return rc;
}

static uint32_t rnd_next(void)
{
	cv.rnd ^= cv.rnd << 13;
	cv.rnd ^= cv.rnd >> 17;
	cv.rnd ^= cv.rnd << 5;
	return cv.rnd;
}

/* Leaves every file as the power failure left it and ends the process. Plain syscalls:
 * SQLite's handles are abandoned mid-operation. */
static void power_cut(void)
{
	static const unsigned char zeros[SECTOR];

	for (struct node *n = cv.nodes; n != NULL; n = n->next) {
		int fd = open(n->path, O_RDWR);
		int64_t size = n->synced_size;
		struct stat st;

		if (fd < 0)
			continue;
		/* With keep_random the new size (growth or truncation) may have reached the disk. */
		if (cv.keep_random && (rnd_next() & 1) && fstat(fd, &st) == 0)
			size = st.st_size;
		for (size_t i = 0; i < n->n_undo; i++) {
			const struct undo *u = &n->undo[i];

			if (cv.keep_random && (rnd_next() & 1))
				continue;            /* this sector's new contents made it */
			if (pwrite(fd, u->had ? u->old : zeros, SECTOR, u->sector * SECTOR) != SECTOR)
				_exit(125);
		}
		if (ftruncate(fd, size) != 0)
			_exit(125);
		close(fd);
		if (n->role == CRASHVFS_DB) {
			/* The wal-index is memory: gone, and rebuilt from the -wal at the next open. */
			size_t len = strlen(n->path) + 5;
			char *shm = malloc(len);

			if (shm != NULL) {
				memcpy(shm, n->path, len - 5);
				memcpy(shm + len - 5, "-shm", 5);
				unlink(shm);
				free(shm);
			}
		}
	}
	_exit(cv.exit_code);
}

/* Counts one op; returns the planned fault's code for it, else SQLITE_OK. */
static int count_op(int op, int role)
{
	cv.ops++;
	if (cv.n_trace == cv.cap_trace) {
		size_t cap = cv.cap_trace != 0 ? cv.cap_trace * 2 : 1024;
		struct crashvfs_trace *t = realloc(cv.trace, cap * sizeof(*t));

		if (t == NULL)
			return SQLITE_NOMEM;
		cv.trace = t;
		cv.cap_trace = cap;
	}
	cv.trace[cv.n_trace++] = (struct crashvfs_trace){ (uint8_t)op, (uint8_t)role, cv.phase };
	if (cv.fail_at != 0 && cv.ops >= cv.fail_at && (cv.fail_op == 0 || cv.fail_op == op)) {
		int rc = cv.fail_rc;

		cv.failed++;
		if (cv.fail_left != 0 && --cv.fail_left == 0)
			cv.fail_at = 0;
		return rc;
	}
	return SQLITE_OK;
}

/* A write or truncate has been done (torn, if the power fails now). */
static int after_op(int rc)
{
	if (cv.ops == cv.cut_at)
		power_cut();
	return rc;
}

static int cv_close(sqlite3_file *pf)
{
	struct cfile *p = (struct cfile *)pf;

	return p->real->pMethods->xClose(p->real);
}

static int cv_read(sqlite3_file *pf, void *buf, int amt, sqlite3_int64 off)
{
	struct cfile *p = (struct cfile *)pf;

	return p->real->pMethods->xRead(p->real, buf, amt, off);
}

static int cv_write(sqlite3_file *pf, const void *buf, int amt, sqlite3_int64 off)
{
	struct cfile *p = (struct cfile *)pf;
	int rc;

	if (p->node == NULL)
		return p->real->pMethods->xWrite(p->real, buf, amt, off);
	rc = count_op(CRASHVFS_WRITE, p->node->role);
	if (rc == SQLITE_OK)
		rc = save_range(p, off, amt);
	if (rc == SQLITE_OK)
		rc = p->real->pMethods->xWrite(p->real, buf, amt, off);
	return after_op(rc);
}

static int cv_truncate(sqlite3_file *pf, sqlite3_int64 size)
{
	struct cfile *p = (struct cfile *)pf;
	sqlite3_int64 cur = 0;
	int rc;

	if (p->node == NULL)
		return p->real->pMethods->xTruncate(p->real, size);
	rc = count_op(CRASHVFS_TRUNCATE, p->node->role);
	if (rc == SQLITE_OK)
		rc = p->real->pMethods->xFileSize(p->real, &cur);
	if (rc == SQLITE_OK && cur > size)
		rc = save_range(p, size, cur - size);
	if (rc == SQLITE_OK)
		rc = p->real->pMethods->xTruncate(p->real, size);
	return after_op(rc);
}

/* No fsync: the page cache is the disk here. The sync is what makes the writes stay. */
static int cv_sync(sqlite3_file *pf, int flags)
{
	struct cfile *p = (struct cfile *)pf;
	sqlite3_int64 size = 0;
	int rc;

	if (p->node == NULL)
		return SQLITE_OK;
	rc = count_op(CRASHVFS_SYNC, p->node->role);
	if (cv.ops == cv.cut_at)
		power_cut();
	if (rc == SQLITE_OK)
		rc = p->real->pMethods->xFileSize(p->real, &size);
	if (rc == SQLITE_OK)
		node_synced(p->node, size);
	return rc;
}

static int cv_file_size(sqlite3_file *pf, sqlite3_int64 *size)
{
	struct cfile *p = (struct cfile *)pf;

	return p->real->pMethods->xFileSize(p->real, size);
}

static int cv_lock(sqlite3_file *pf, int lock)
{
	struct cfile *p = (struct cfile *)pf;

	return p->real->pMethods->xLock(p->real, lock);
}

static int cv_unlock(sqlite3_file *pf, int lock)
{
	struct cfile *p = (struct cfile *)pf;

	return p->real->pMethods->xUnlock(p->real, lock);
}

static int cv_check_reserved(sqlite3_file *pf, int *out)
{
	struct cfile *p = (struct cfile *)pf;

	return p->real->pMethods->xCheckReservedLock(p->real, out);
}

static int cv_file_control(sqlite3_file *pf, int op, void *arg)
{
	struct cfile *p = (struct cfile *)pf;

	return p->real->pMethods->xFileControl(p->real, op, arg);
}

static int cv_sector_size(sqlite3_file *pf)
{
	struct cfile *p = (struct cfile *)pf;

	return p->real->pMethods->xSectorSize(p->real);
}

static int cv_device_characteristics(sqlite3_file *pf)
{
	struct cfile *p = (struct cfile *)pf;

	return p->real->pMethods->xDeviceCharacteristics(p->real);
}

/* The wal-index (shared memory) passes straight through: a cut deletes it. */
static int cv_shm_map(sqlite3_file *pf, int region, int size, int extend, void volatile **pp)
{
	struct cfile *p = (struct cfile *)pf;

	return p->real->pMethods->xShmMap(p->real, region, size, extend, pp);
}

static int cv_shm_lock(sqlite3_file *pf, int offset, int n, int flags)
{
	struct cfile *p = (struct cfile *)pf;

	return p->real->pMethods->xShmLock(p->real, offset, n, flags);
}

static void cv_shm_barrier(sqlite3_file *pf)
{
	struct cfile *p = (struct cfile *)pf;

	p->real->pMethods->xShmBarrier(p->real);
}

static int cv_shm_unmap(sqlite3_file *pf, int delete_flag)
{
	struct cfile *p = (struct cfile *)pf;

	return p->real->pMethods->xShmUnmap(p->real, delete_flag);
}

static int cv_fetch(sqlite3_file *pf, sqlite3_int64 off, int amt, void **pp)
{
	struct cfile *p = (struct cfile *)pf;

	return p->real->pMethods->xFetch(p->real, off, amt, pp);
}

static int cv_unfetch(sqlite3_file *pf, sqlite3_int64 off, void *ptr)
{
	struct cfile *p = (struct cfile *)pf;

	return p->real->pMethods->xUnfetch(p->real, off, ptr);
}

static const sqlite3_io_methods cv_methods = {
	3, cv_close, cv_read, cv_write, cv_truncate, cv_sync, cv_file_size, cv_lock, cv_unlock,
	cv_check_reserved, cv_file_control, cv_sector_size, cv_device_characteristics,
	cv_shm_map, cv_shm_lock, cv_shm_barrier, cv_shm_unmap, cv_fetch, cv_unfetch,
};

static int cv_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *pf, int flags, int *out_flags)
{
	struct cfile *p = (struct cfile *)pf;
	int role = 0, rc;

	(void)vfs;
	memset(p, 0, sizeof(*p));
	p->real = (sqlite3_file *)(p + 1);
	rc = cv.real->xOpen(cv.real, name, p->real, flags, out_flags);
	if (rc != SQLITE_OK)
		return rc;                   /* pMethods stays NULL: SQLite will not close it */
	if (p->real->pMethods == NULL || p->real->pMethods->iVersion < 3) {
		if (p->real->pMethods != NULL)
			p->real->pMethods->xClose(p->real);
		return SQLITE_CANTOPEN;      /* only the unix VFS's files are wrapped */
	}
	if (flags & SQLITE_OPEN_MAIN_DB)
		role = CRASHVFS_DB;
	else if (flags & SQLITE_OPEN_WAL)
		role = CRASHVFS_WAL;
	else if (flags & SQLITE_OPEN_MAIN_JOURNAL)
		role = CRASHVFS_JOURNAL;
	if (role != 0 && name != NULL && (p->node = node_get(name, role)) == NULL) {
		p->real->pMethods->xClose(p->real);
		return SQLITE_NOMEM;
	}
	p->base.pMethods = &cv_methods;
	return SQLITE_OK;
}

/* A deletion is taken as durable at once: SQLite deletes only files it no longer needs. */
static int cv_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
	(void)vfs;
	node_drop(name);
	return cv.real->xDelete(cv.real, name, sync_dir);
}

static int cv_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
	(void)vfs;
	return cv.real->xAccess(cv.real, name, flags, out);
}

static int cv_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
	(void)vfs;
	return cv.real->xFullPathname(cv.real, name, n, out);
}

int crashvfs_register(int make_default)
{
	sqlite3_vfs *real = sqlite3_vfs_find(NULL);
	int rc;

	if (cv.registered)
		return SQLITE_MISUSE;
	if (real == NULL)
		return SQLITE_ERROR;
	memset(&cv, 0, sizeof(cv));
	cv.real = real;
	/* The rest (randomness, time, dlopen, sleep) is the unix VFS's own. */
	cv.vfs = *real;
	cv.vfs.pNext = NULL;
	cv.vfs.zName = CRASHVFS_NAME;
	cv.vfs.szOsFile = (int)sizeof(struct cfile) + real->szOsFile;
	cv.vfs.xOpen = cv_open;
	cv.vfs.xDelete = cv_delete;
	cv.vfs.xAccess = cv_access;
	cv.vfs.xFullPathname = cv_full_pathname;
	rc = sqlite3_vfs_register(&cv.vfs, make_default);
	cv.registered = rc == SQLITE_OK;
	return rc;
}

void crashvfs_reset(void)
{
	for (struct node *n = cv.nodes; n != NULL; n = n->next)
		node_synced(n, file_size(n->path));
	cv.ops = 0;
	cv.n_trace = 0;
	cv.cut_at = 0;
	cv.fail_at = 0;
	cv.failed = 0;
}

void crashvfs_unregister(void)
{
	if (!cv.registered)
		return;
	sqlite3_vfs_unregister(&cv.vfs);
	while (cv.nodes != NULL) {
		struct node *n = cv.nodes;

		cv.nodes = n->next;
		node_free(n);
	}
	free(cv.trace);
	memset(&cv, 0, sizeof(cv));
}

uint64_t crashvfs_ops(void)
{
	return cv.ops;
}

void crashvfs_phase(uint8_t phase)
{
	cv.phase = phase;
}

const struct crashvfs_trace *crashvfs_trace(size_t *n)
{
	*n = cv.n_trace;
	return cv.trace;
}

uint64_t crashvfs_find(uint64_t from, uint64_t to, enum crashvfs_op op, enum crashvfs_role role,
                       unsigned nth)
{
	uint64_t found = 0;
	unsigned seen = 0;

	for (uint64_t i = from; i < to && i < cv.n_trace; i++) {
		if (cv.trace[i].op != op || cv.trace[i].role != role)
			continue;
		found = i + 1;
		if (++seen == nth)
			return found;
	}
	return nth == 0 ? found : 0;
}

void crashvfs_cut_at(uint64_t at, int keep_random, unsigned seed, int exit_code)
{
	cv.cut_at = at;
	cv.keep_random = keep_random;
	cv.rnd = seed * 2654435761u ^ 0x9E3779B9u;
	if (cv.rnd == 0)
		cv.rnd = 1;
	cv.exit_code = exit_code;
}

void crashvfs_fail_at(uint64_t at, enum crashvfs_op op, int rc, unsigned count)
{
	cv.fail_at = at;
	cv.fail_op = (int)op;
	cv.fail_rc = rc;
	cv.fail_left = count;
}

void crashvfs_fail_clear(void)
{
	cv.fail_at = 0;
}

unsigned crashvfs_failed(void)
{
	return cv.failed;
}
