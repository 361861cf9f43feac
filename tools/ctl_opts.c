/* SPDX-License-Identifier: Apache-2.0 */
/* kippuctl's option parser: each subcommand describes its options in a table (struct
 * kp_ctl_opt) and this one loop reads them, so no subcommand carries a getopt loop of its own. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kp_tools.h"

#define MAX_OPTS 32

const char *kp_ctl_prog = "kippuctl";

/* Where a row's value goes in the caller's struct. */
#define FIELD(args, off, type) ((type *)(void *)((char *)(args) + (off)))

static int store_opt(const struct kp_ctl_opt *o, void *args, const char *v)
{
	char *end;
	long n;

	switch (o->kind) {
	case KP_CTL_STR:
		*FIELD(args, o->field, const char *) = v;
		return 0;
	case KP_CTL_FLAG:
		*FIELD(args, o->field, int) = 1;
		return 0;
	case KP_CTL_INT:
		n = strtol(v, &end, 10);
		if (*end != '\0' || n < o->min || n > o->max) {
			fprintf(stderr, "%s: --%s must be %ld to %ld\n", kp_ctl_prog, o->name, o->min,
			        o->max);
			return -1;
		}
		*FIELD(args, o->field, int) = (int)n;
		return 0;
	case KP_CTL_LIST: {
		int *count = FIELD(args, o->count_field, int);

		if (*count == o->max) {
			fprintf(stderr, "%s: at most %ld --%s at once\n", kp_ctl_prog, o->max, o->name);
			return -1;
		}
		FIELD(args, o->field, const char *)[(*count)++] = v;
		return 0;
	}
	}
	return -1;
}

int kp_ctl_parse(int argc, char **argv, const struct kp_ctl_opt *opts, void *args,
                 struct kp_ctl_pos *pos)
{
	struct option lo[MAX_OPTS + 1];
	size_t n = 0;
	int c;

	memset(lo, 0, sizeof(lo));
	for (; opts[n].name != NULL && n < MAX_OPTS; n++) {
		lo[n].name = opts[n].name;
		lo[n].has_arg = opts[n].kind == KP_CTL_FLAG ? no_argument : required_argument;
		lo[n].val = 256 + (int)n;      /* past every short option getopt could return */
	}
	pos->n = 0;
	pos->extra = NULL;
	optind = 1;
	/* getopt names argv[0] in its messages: "kippuctl: unrecognized option", not the
	 * subcommand ("create: ...") that argv[0] is here */
	char prog[64], *saved = argv[0];

	snprintf(prog, sizeof(prog), "%s", kp_ctl_prog);
	argv[0] = prog;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		if (c < 256 || c >= 256 + (int)n ||
		    store_opt(&opts[c - 256], args, optarg) != 0) {
			argv[0] = saved;
			return -1;
		}
	}
	argv[0] = saved;
	for (; optind < argc; optind++) {
		if (pos->n == pos->max) {
			pos->extra = argv[optind];
			return -1;
		}
		pos->v[pos->n++] = argv[optind];
	}
	return 0;
}

int kp_ctl_need(const char *v, const char *name)
{
	if (v == NULL) {
		fprintf(stderr, "kippuctl: %s is required\n", name);
		return -1;
	}
	return 0;
}

int kp_ctl_readable(const char *what, const char *path)
{
	char err[600];

	if (kp_file_unreadable(what, path, err, sizeof(err)) == 0)
		return 0;
	fprintf(stderr, "kippuctl: %s\n", err);
	return -1;
}

int kp_ctl_token_key(const char *path, const char *what, uint8_t key[KP_TOKEN_KEY_LEN])
{
	int rc;

	if (path == NULL) {
		fprintf(stderr, "kippuctl: --token-key is needed to turn %s into a token\n", what);
		return -1;
	}
	if (kp_ctl_readable("token key", path) != 0)
		return -1;
	rc = kp_token_key_load(path, key);
	if (rc != KP_OK) {
		fprintf(stderr, "kippuctl: %s: %s\n", path, kp_strerror(rc));
		return -1;
	}
	return 0;
}
