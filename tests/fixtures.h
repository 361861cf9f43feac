/* SPDX-License-Identifier: Apache-2.0 */
/* Fixtures of the terminal layer shared by its test programs (tests/fixtures.c): a store in
 * a fresh directory, the terminal's key, its certificate and a tap engine. Linked only into
 * tests that link the terminal library. */
#ifndef KP_TEST_FIXTURES_H
#define KP_TEST_FIXTURES_H

#include <stdint.h>

#include "kp_terminal.h"

struct tu_term {
	char dir[256];
	char db[300];                     /* dir/t.db */
	kp_store *s;
	kp_key *key;
	kp_cert *cert;                    /* NULL unless the test set it (tu_term_cert) */
	kp_tap_engine *e;                 /* NULL until tu_term_engine */
	struct kp_terminal_cfg cfg;
	uint8_t token_key[KP_TOKEN_KEY_LEN];
};

/* A fresh directory with an open store dir/t.db, a new key, a token key of token_fill bytes
 * and the default config for terminal_id of operator_id. Fails the test if any step does. */
struct tu_term *tu_term_new(const char *terminal_id, const char *operator_id,
                            uint8_t token_fill);

/* (Re)opens the tap engine on the fixture's store, config and keys. */
void tu_term_engine(struct tu_term *f);

/* Closes all tu_term_new opened, frees f->cert and removes the directory. */
void tu_term_free(struct tu_term *f);

/* cmocka teardown for a fixture in *state. */
int tu_term_teardown(void **state);

/* A CA (dir/ca.crt) and a certificate for the fixture's key with common name cn (dir/t.crt),
 * kept in the store's terminal_cert like the terminal does; the caller frees it. */
kp_cert *tu_term_cert(struct tu_term *f, const char *cn);

/* The token of the FeliCa card whose IDm is 01 01 02 03 04 05 06 last. */
void tu_term_token(const struct tu_term *f, uint8_t last, uint8_t token[KP_TOKEN_LEN]);

/* An entitlement of that card: left rides (or yen), valid from..until (ms). */
void tu_term_put_ent(struct tu_term *f, uint8_t card, int64_t id, const char *product,
                     int64_t left, int64_t from, int64_t until);

#endif
