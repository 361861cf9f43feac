/* SPDX-License-Identifier: Apache-2.0 */
/* Writes the binary seeds of tests/fuzz/corpus/, run by hand when a format changes, from
 * the top of the tree:
 *   make FUZZ=1 CC=clang BUILD=build-fuzz build-fuzz/fuzz/kippu-fuzz-seeds
 *   ASAN_OPTIONS=detect_leaks=0 build-fuzz/fuzz/kippu-fuzz-seeds tests/fuzz/corpus
 * Records as the tests make them, signed with the key make fuzz makes in $KP_FUZZ_DATA; sync messages
 * and frames; a bundle with every array, exported from a store that loaded the golden fare
 * table's load file (tests/data/fares/load.txt) and imported its golden feeds; and those
 * feeds' fare packages. */
#include "fuzzutil.h"
#include "kp_bundle.h"
#include "kp_cert.h"
#include "kp_fare.h"
#include "kp_key.h"
#include "kp_proto.h"
#include "kp_record.h"
#include "kp_store.h"
#include "kp_tools.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *root;

static void put(const char *target, const char *name, const uint8_t *p, size_t n)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s/%s", root, target, name);
	f = fopen(path, "wb");
	if (f == NULL || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
		fprintf(stderr, "mkseeds: cannot write %s\n", path);
		exit(1);
	}
}

static void frame(const char *name, const uint8_t *p, size_t n)
{
	uint8_t *buf = malloc(n + 4);

	buf[0] = (uint8_t)(n >> 24);
	buf[1] = (uint8_t)(n >> 16);
	buf[2] = (uint8_t)(n >> 8);
	buf[3] = (uint8_t)n;
	memcpy(buf + 4, p, n);
	put("fuzz_msg", name, buf, n + 4);
	free(buf);
}

static struct kp_record record(int which)
{
	struct kp_record r;

	memset(&r, 0, sizeof(r));
	strcpy(r.terminal, which ? "kiosk-1" : "bus-042");
	r.seq = which ? 2 : 300;
	r.time_ms = 1700000000123LL;
	strcpy(r.kind, which ? "link" : "tap");
	r.has_token = 1;
	memset(r.token, 0xAA, sizeof(r.token));
	strcpy(r.operator_id, "kansai-bus");
	if (!which) {
		strcpy(r.route, "R12");
		strcpy(r.stop, "S3");
		strcpy(r.product, "pass-1d");
		r.entitlement = 70000;
		r.rides = 1;
		r.amount = -25;
		r.has_left = 1;
		r.left = 24;
		strcpy(r.result, "accepted");
		strcpy(r.reason, "ok");
		strcpy(r.category, "resident");
		strcpy(r.fare, "A 210 adult");
	} else {
		strcpy(r.result, "requested");
		strcpy(r.reason, "link-request");
		r.has_via = 1;
		memset(r.via, 0xA0, sizeof(r.via));
	}
	memset(r.prev, 0xCC, sizeof(r.prev));
	return r;
}

static void messages(const uint8_t *const *cose, const size_t *cose_n, const uint8_t *bundle,
                     size_t bundle_n)
{
	static const char *const names[] = { NULL, "hello", "welcome", "records", "ack",
	                                     "refused", "getconfig", "config", "bye", "error" };
	struct kp_bytes items[2] = { { cose[0], cose_n[0] }, { cose[1], cose_n[1] } };

	for (int t = KP_MSG_HELLO; t <= KP_MSG_ERROR; t++) {
		struct kp_msg m;
		uint8_t *out = NULL;
		size_t n = 0;
		char name[64];

		memset(&m, 0, sizeof(m));
		m.type = (enum kp_msg_type)t;
		strcpy(m.terminal, "bus-042");
		m.config = 7;
		m.acked = 299;
		m.seq = 300;
		strcpy(m.reason, "bad-signature");
		if (t == KP_MSG_HELLO) {
			m.chain = 1;
			m.has_journal = 1;
			memset(m.journal, 0x5A, sizeof(m.journal));
			m.has_last = 1;
			m.last = 301;
		}
		if (t == KP_MSG_WELCOME) {
			m.has_head = 1;
			memset(m.head, 0x11, sizeof(m.head));
		}
		if (t == KP_MSG_RECORDS) {
			m.items = items;
			m.n_items = 2;
		}
		if (t == KP_MSG_CONFIG) {
			m.has_bundle = 1;
			m.bundle.p = bundle;
			m.bundle.n = bundle_n;
		}
		if (kp_msg_encode(&m, &out, &n) != KP_SYNC_OK) {
			fprintf(stderr, "mkseeds: cannot encode %s\n", names[t]);
			exit(1);
		}
		snprintf(name, sizeof(name), "%s.cbor", names[t]);
		put("fuzz_msg", name, out, n);
		put("fuzz_cbor", name, out, n);
		snprintf(name, sizeof(name), "%s.frame", names[t]);
		frame(name, out, n);
		free(out);
	}
}

static void fill_bundle(struct kp_bundle *b)
{
	static struct kp_bundle_entitlement ent[2];
	static struct kp_bundle_deny deny[1];
	static struct kp_bundle_eligibility elig[1];
	static struct kp_bundle_remote remote[1];

	b->version = 7;
	b->issued_ms = 1700000000000LL;
	strcpy(b->terminal, "fuzz-term");
	b->acked = 299;
	memset(ent, 0, sizeof(ent));
	ent[0].id = 1;
	memset(ent[0].token, 0xAA, KP_TOKEN_LEN);
	strcpy(ent[0].product, "R5");
	ent[0].remaining = 5;
	ent[0].valid_from_ms = 1700000000000LL;
	ent[0].valid_until_ms = 1800000000000LL;
	ent[1] = ent[0];
	ent[1].id = 2;
	strcpy(ent[1].product, "DAY1");
	ent[1].first_use = 1;
	b->entitlements = ent;
	b->n_entitlements = 2;
	memset(deny, 0, sizeof(deny));
	memset(deny[0].token, 0xBB, KP_TOKEN_LEN);
	strcpy(deny[0].reason, "lost");
	b->denylist = deny;
	b->n_denylist = 1;
	memset(elig, 0, sizeof(elig));
	memset(elig[0].token, 0xAA, KP_TOKEN_LEN);
	strcpy(elig[0].category, "child");
	elig[0].valid_from_ms = 1700000000000LL;
	elig[0].valid_until_ms = 1800000000000LL;
	b->eligibility = elig;
	b->n_eligibility = 1;
	memset(remote, 0, sizeof(remote));
	memset(remote[0].token, 0xAA, KP_TOKEN_LEN);
	remote[0].last_ms = 1700000000000LL;
	remote[0].open = 1;
	remote[0].open_ms = 1700000000000LL;
	strcpy(remote[0].open_operator, "A");
	strcpy(remote[0].open_route, "R1");
	strcpy(remote[0].open_stop, "S1");
	remote[0].day_id = 19675;
	remote[0].day_spent = 210;
	remote[0].month_id = 202311;
	remote[0].month_spent = 210;
	b->remote = remote;
	b->n_remote = 1;
	b->policy.max_age_s = 86400;
	b->policy.direct = 1;
	strcpy(b->policy.products[0], "SV");
	b->policy.n_products = 1;
}

int main(int argc, char **argv)
{
	static const uint8_t no_key[KP_TOKEN_KEY_LEN] = { 0 };
	kp_key *key = NULL;
	kp_store *s = NULL;
	struct kp_bundle b;
	uint8_t *cose[2], *payload[2], *enc = NULL, *signed_b = NULL;
	size_t cose_n[2], payload_n[2], enc_n = 0, signed_n = 0, lines = 0;
	char err[512];

	if (argc != 2) {
		fputs("usage: kippu-fuzz-seeds CORPUS-FOLDER\n", stderr);
		return 2;
	}
	root = argv[1];
	if (kp_key_load(&key, fuzz_data_file("fuzz-key.pem")) != 0) {
		fputs("mkseeds: run from the top of the tree\n", stderr);
		return 1;
	}
	for (int i = 0; i < 2; i++) {
		struct kp_record r = record(i);
		char name[32];

		if (kp_record_encode(&r, &payload[i], &payload_n[i]) != KP_RECORD_OK ||
		    kp_cose_sign1(key, "bus-042", payload[i], payload_n[i], &cose[i], &cose_n[i]) !=
		    KP_RECORD_OK)
			return 1;
		snprintf(name, sizeof(name), "payload-%d.cbor", i);
		put("fuzz_record", name, payload[i], payload_n[i]);
		put("fuzz_cbor", name, payload[i], payload_n[i]);
		snprintf(name, sizeof(name), "cose-%d.cbor", i);
		put("fuzz_record", name, cose[i], cose_n[i]);
		put("fuzz_cbor", name, cose[i], cose_n[i]);
	}

	if (kp_store_open(&s, ":memory:") != 0 ||
	    kp_load_file(s, "tests/data/fares/load.txt", no_key, err, sizeof(err), &lines) != 0) {
		fprintf(stderr, "mkseeds: load file: %s\n", err);
		return 1;
	}
	for (size_t i = 0; i < 4; i++) {
		static const char *const golden[] = { "golden-flat", "golden-zone", "golden-v2",
		                                      "golden-chain" };
		struct kp_fare_import_opts opts = { .feed_id = golden[i] };
		struct kp_fare_import_stats st;
		char dir[128];

		snprintf(dir, sizeof(dir), "tests/data/fares/%s", golden[i]);
		if (kp_fares_import(s, dir, &opts, &st, err, sizeof(err)) != 0) {
			fprintf(stderr, "mkseeds: import %s: %s\n", dir, err);
			return 1;
		}
	}
	memset(&b, 0, sizeof(b));
	if (kp_store_export_config(s, &b) != 0)
		return 1;
	{
		/* the feeds of the operators' fares (the load file's `fares` lines) */
		struct kp_bundle_feed *f = calloc(b.n_operator_fares + 1, sizeof(*f));
		size_t n = 0;

		for (size_t i = 0; i < b.n_operator_fares; i++) {
			const char *id = b.operator_fares[i].feed_id;
			char name[64];

			if (strncmp(id, "golden", 6) != 0)
				continue;       /* the real feeds are large: the golden ones only */
			snprintf(f[n].id, sizeof(f[n].id), "%s", id);
			if (kp_store_export_feed(s, id, &f[n].package, &f[n].package_len, NULL,
			                         err, sizeof(err)) != 0) {
				fprintf(stderr, "mkseeds: feed %s: %s\n", id, err);
				return 1;
			}
			kp_sha256(f[n].package, f[n].package_len, f[n].digest);
			snprintf(name, sizeof(name), "package-%s.cbor", id);
			put("fuzz_bundle", name, f[n].package, f[n].package_len);
			n++;
		}
		b.feeds = f;
		b.n_feeds = n;
	}
	fill_bundle(&b);
	if (kp_bundle_encode(&b, &enc, &enc_n) != KP_SYNC_OK ||
	    kp_bundle_sign(&b, key, &signed_b, &signed_n) != KP_SYNC_OK) {
		fputs("mkseeds: cannot encode the bundle\n", stderr);
		return 1;
	}
	put("fuzz_bundle", "bundle.cbor", enc, enc_n);
	put("fuzz_bundle", "bundle-signed.cbor", signed_b, signed_n);
	messages((const uint8_t *const *)cose, cose_n, signed_b, signed_n);
	/* kp_bundle_free would free the static arrays of fill_bundle: the process ends here */
	kp_store_close(s);
	return 0;
}
