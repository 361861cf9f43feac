/* SPDX-License-Identifier: Apache-2.0 */
/* kippu terminal, card/: the terminal's error codes, the FeliCa client and transit-IC
 * layout, the My Number card (JPKI) and its PIN, card tokens. Depends on hal/, crypto/ and
 * the protocol's constants (proto/kp_record.h) only. */
#ifndef KP_CARD_H
#define KP_CARD_H

#include <stddef.h>
#include <stdint.h>
#include "kp_hal.h"
#include "kp_crypto.h"
#include "kp_record.h"

enum kp_term_rc {
	KP_OK              = 0,
	KP_E_INVAL         = -0x401, /* bad argument or value */
	KP_E_NOMEM         = -0x402,
	KP_E_IO            = -0x403,
	KP_E_DB            = -0x404, /* SQLite failed; detail in the store's last error */
	KP_E_SCHEMA        = -0x405, /* database newer than this program, or damaged schema */
	KP_E_FRAME_SHORT   = -0x410, /* card reply shorter than its form requires */
	KP_E_FRAME_LONG    = -0x411, /* card reply longer than its form allows */
	KP_E_FRAME_LEN     = -0x412, /* LEN byte disagrees with the reply's length */
	KP_E_FRAME_CODE    = -0x413, /* response code is not command + 1 */
	KP_E_FRAME_IDM     = -0x414, /* reply from another IDm than the polled card's */
	KP_E_CARD_STATUS   = -0x415, /* card answered with error status flags */
	KP_E_FRAME_FORMAT  = -0x416, /* counts or fields inside the reply are inconsistent */
	KP_E_CONFIG        = -0x420, /* configuration file or option is wrong */
	KP_E_PARSE         = -0x421, /* a load file line is wrong */
	KP_E_CHAIN         = -0x430, /* journal hash chain broken */
	KP_E_SEQ           = -0x431, /* journal sequence not gapless */
	KP_E_JOURNAL       = -0x432, /* stored record differs from its signed payload */
	KP_E_SW_NOTFOUND   = -0x440, /* card: 6A82 file or application not found */
	KP_E_SW_SECURITY   = -0x441, /* card: 6982 security status not satisfied */
	KP_E_SW_LENGTH     = -0x442, /* card: 6700 wrong length, or 6Cxx wrong Le */
	KP_E_SW_BLOCKED    = -0x443, /* card: 6984/6983 PIN blocked */
	KP_E_SW_PIN        = -0x444, /* card: 63Cx wrong PIN (x tries left) */
	KP_E_SW_OTHER      = -0x445, /* card: another error status word */
	KP_E_CERT          = -0x446, /* certificate unreadable, not from the JPKI CA, wrong use */
	KP_E_CERT_EXPIRED  = -0x447, /* certificate past its notAfter at the tap's time */
	KP_E_PIN_LAST_TRY  = -0x448, /* one PIN try left: the terminal will not risk it */
	KP_E_CERT_NOT_YET  = -0x449, /* certificate before its notBefore at the tap's time */
	KP_E_PIN_FORMAT    = -0x44A, /* the PIN input is not exactly 4 ASCII digits */
	KP_E_PIN_NONE      = -0x44B, /* no PIN was entered for this card */
	KP_E_PIN_COUNTER   = -0x44C, /* the PIN counter's answer is not a well-formed 63 Cx */
	KP_E_CARD_SIGNATURE = -0x44D, /* the card's signature does not verify: not that card's key */
	KP_E_FEED          = -0x450, /* a GTFS feed file violates the spec (detail: file:line: field) */
	KP_E_NOFARE        = -0x451, /* no fare rule matches the journey */
};

/* Text for any kippu error code (HAL, crypto, record, terminal). */
const char *kp_strerror(int rc);

/* ---- reasons of results and refusals (reasons.def: one row each) ---- */

enum kp_reason {
#define KP_REASON(id, code, en, ja) KP_R_##id,
#include "reasons.def"
#undef KP_REASON
	KP_R_COUNT
};
/* The wire string of a reason ("ok", "denylisted", ...): what records, the HMI and the
 * event stream carry. */
const char *kp_reason_code(enum kp_reason r);
/* What the rider reads for a reason's wire string, in Japanese (ja != 0) or English; NULL
 * for a reason the table does not know or that has no text in that language. */
const char *kp_reason_text(const char *code, int ja);

/* ---- FeliCa client (JIS X 6319-4 frames over the HAL) ---- */

#define KP_FELICA_MAX_BLOCKS 12
#define KP_FELICA_HISTORY_BLOCKS 20
#define KP_SVC_BALANCE 0x008B
#define KP_SVC_HISTORY 0x090F
#define KP_SVC_GATE    0x108F

struct kp_felica {
	struct kp_reader *reader;
	uint8_t idm[8];
	uint8_t pmm[8];
	int timeout_ms;
	uint8_t sf1, sf2;                /* status flags of the last error reply */
};

/* Binds the client to the card the reader activated (its IDm/PMm). */
void kp_felica_init(struct kp_felica *f, struct kp_reader *r, const struct kp_card_info *info,
                    int timeout_ms);
/* Polling: fills idm/pmm (and sys_code when request_code is 1). */
int kp_felica_poll(struct kp_felica *f, uint16_t sys_code, uint8_t request_code,
                   uint8_t idm[8], uint8_t pmm[8], uint16_t *sys_code_out);
/* Request Service: key versions (0xFFFF = no such node) for n node codes. */
int kp_felica_request_service(struct kp_felica *f, const uint16_t *nodes, size_t n,
                              uint16_t *key_versions);
/* Read Without Encryption of n blocks (n <= KP_FELICA_MAX_BLOCKS) of one service. */
int kp_felica_read(struct kp_felica *f, uint16_t service, const uint16_t *blocks, size_t n,
                   uint8_t *out /* 16*n */);

/* Parsers of single replies, exposed so tests can feed them crafted frames. */
int kp_felica_parse_poll(const uint8_t *rx, size_t len, uint8_t request_code,
                         uint8_t idm[8], uint8_t pmm[8], uint16_t *sys_code_out);
int kp_felica_parse_read(const uint8_t *rx, size_t len, const uint8_t idm[8], size_t n_blocks,
                         uint8_t *out, uint8_t *sf1, uint8_t *sf2);
int kp_felica_parse_request_service(const uint8_t *rx, size_t len, const uint8_t idm[8],
                                    size_t n, uint16_t *key_versions);

/* Transit IC (Suica/ICOCA/...) view of the card. */
struct kp_transit_balance {
	unsigned card_type;              /* 008B byte 8 high nibble */
	unsigned region;                 /* 008B byte 8 low nibble */
	unsigned balance;                /* yen */
};
struct kp_transit_history {
	int empty;
	uint8_t terminal_type, process_type;
	unsigned year, month, day;
	uint16_t entry, exit_;           /* station / operator-stop codes */
	unsigned balance;
	uint32_t seq;
	uint8_t region;
};
int kp_transit_read_balance(struct kp_felica *f, struct kp_transit_balance *out);
/* Reads all 20 history blocks (in two reads); out[0] is the newest. */
int kp_transit_read_history(struct kp_felica *f, struct kp_transit_history out[KP_FELICA_HISTORY_BLOCKS]);
void kp_transit_parse_history_block(const uint8_t blk[16], struct kp_transit_history *h);

#define KP_TOKEN_KEY_LEN 32

/* ---- My Number card (JPKI application only) ---- */

#define KP_JPKI_CERT_MAX 4096

struct kp_jpki {
	struct kp_reader *reader;
	int timeout_ms;
	uint16_t sw;                     /* status word of the last APDU */
};
void kp_jpki_init(struct kp_jpki *j, struct kp_reader *r, int timeout_ms);
int  kp_jpki_select_app(struct kp_jpki *j);
/* SELECT JPKI, SELECT EF 000A, READ BINARY (DER header, then chunks of at most 255). */
int  kp_jpki_read_auth_cert(struct kp_jpki *j, uint8_t *der, size_t cap, size_t *len);
#define KP_JPKI_PIN_TRIES 3           /* JPKI's authentication PIN: 4 digits, 3 tries */
#define KP_JPKI_SERIAL_MAX 32         /* octets of a serial number (RFC 5280 says 20) */
#define KP_KU_DIGITAL_SIGNATURE 0x80
/* Tries left on the authentication PIN (VERIFY without data): exactly 63 Cx with x <= 3,
 * or 69 84 (blocked, 0). Anything else is KP_E_PIN_COUNTER (with j->sw): the card is not
 * asked for a PIN. */
int  kp_jpki_pin_tries(struct kp_jpki *j, int *tries);
int  kp_jpki_verify_pin(struct kp_jpki *j, const char *pin, int *tries_left);
/* COMPUTE DIGITAL SIGNATURE over a SHA-256 DigestInfo with the authentication key. */
int  kp_jpki_sign(struct kp_jpki *j, const uint8_t hash[KP_SHA256_LEN], uint8_t *sig,
                  size_t cap, size_t *sig_len);
/* linkage token = first 16 bytes of HMAC-SHA256(token_key, "jpki2" || SHA-256(the issuing
 * CA's SubjectPublicKeyInfo) || serial in canonical form). ca must be the CA whose
 * signature on cert verified (kp_jpki_check_card). The derivation before issue 13,
 * "jpki" || issuer Name || serial, is gone: README, "Linkage tokens made before issue 13". */
#define KP_LINKAGE_KIND "jpki2"
int  kp_linkage_token(const uint8_t key[KP_TOKEN_KEY_LEN], const kp_cert *ca,
                      const kp_cert *cert, uint8_t token[KP_TOKEN_LEN]);
/* Is cert a card's user-authentication certificate from one of cas, at at_ms? An
 * end-entity certificate (no CA:TRUE), keyUsage present with digitalSignature, none of the
 * cas itself (nor their keys), signed by one of cas (*issuer: its index) and valid with it
 * at at_ms (INT64_MIN: dates not looked at). KP_E_CERT_EXPIRED / KP_E_CERT_NOT_YET only
 * for a certificate a configured CA did sign; KP_E_CERT for everything else; err says
 * why (no serial, no name). */
int  kp_jpki_check_card(const kp_cert *cert, const kp_cert *const *cas, size_t n_cas,
                        int64_t at_ms, size_t *issuer, char *err, size_t err_cap);
/* Reads the authentication certificate, checks it (kp_jpki_check_card) and derives the
 * linkage token. *cert_out (if not NULL) keeps the certificate for kp_jpki_prove. Nothing
 * of the certificate is kept. */
int  kp_jpki_identify(struct kp_jpki *j, const kp_cert *const *cas, size_t n_cas,
                      int64_t at_ms, const uint8_t token_key[KP_TOKEN_KEY_LEN],
                      uint8_t token[KP_TOKEN_LEN], kp_cert **cert_out, char *err,
                      size_t err_cap);

/* ---- the PIN of one card session (link mode) ----
 * A PIN belongs to the card in the field: taken once for it, used at most once, wiped at
 * once, never read again for another card. */
#define KP_PIN_LEN 4
#define KP_PIN_FILE_MAX 64            /* a longer PIN input is refused unread */
struct kp_pin {
	char digits[KP_PIN_LEN + 1];
	int have;
};
/* KP_OK if digits is exactly 4 ASCII digits, else KP_E_PIN_FORMAT. */
int  kp_pin_check(const char *digits);
/* buf (n bytes): exactly 4 ASCII digits, optionally followed by one newline; else
 * KP_E_PIN_FORMAT and err says what is wrong (never a digit of it). */
int  kp_pin_parse(struct kp_pin *pin, const char *buf, size_t n, char *err, size_t err_cap);
/* Takes the PIN the pad left in path and consumes it: the file is renamed away (atomic: a
 * later card never sees it), read, overwritten and removed, whatever it held. KP_E_PIN_NONE
 * if there is none, KP_E_PIN_FORMAT if it is not 4 digits (nothing to send), KP_E_IO. */
int  kp_pin_take_file(struct kp_pin *pin, const char *path, char *err, size_t err_cap);
void kp_pin_wipe(struct kp_pin *pin);
/* Strong mode: checks the PIN (KP_E_PIN_NONE, KP_E_PIN_FORMAT before any APDU); reads the
 * PIN counter (KP_E_PIN_COUNTER when malformed) and refuses when one try or none is left;
 * VERIFY, and the PIN is wiped (on every path: it is used at most once); has the card sign a
 * fresh random challenge and verifies it with the certificate (KP_E_CARD_SIGNATURE). */
int  kp_jpki_prove(struct kp_jpki *j, const kp_cert *cert, struct kp_pin *pin, int *tries_left,
                   char *err, size_t err_cap);

/* ---- card identification: which card, its token, its balance ---- */

enum kp_card_kind {
	KP_CARD_NONE = 0,                /* not a card kippu takes (or not identified) */
	KP_CARD_TRANSIT_IC,              /* FeliCa transit IC card: token of its IDm */
	KP_CARD_MYNUMBER,                /* My Number card (JPKI): its linkage token */
};

#define KP_CARD_ID_BALANCE 0x1       /* read a transit IC card's balance block */
#define KP_CARD_ID_CERT    0x2       /* keep a My Number card's certificate (strong mode) */

/* What identification needs: the token key never leaves card/ and the tap engine. */
struct kp_card_id_cfg {
	const uint8_t *token_key;        /* KP_TOKEN_KEY_LEN bytes */
	const kp_cert *const *jpki_cas;  /* the JPKI CAs My Number cards chain to */
	size_t n_jpki_cas;
	int timeout_ms;                  /* per frame */
	int64_t now_ms;                  /* certificates are judged at this time */
	unsigned flags;                  /* KP_CARD_ID_BALANCE, KP_CARD_ID_CERT */
};

struct kp_card_id {                  /* the token is wiped by kp_card_id_wipe */
	enum kp_card_kind kind;
	int has_token;                   /* token is the card's (also when a read failed after) */
	uint8_t token[KP_TOKEN_LEN];
	int has_balance;                 /* balance read (KP_CARD_ID_BALANCE) */
	struct kp_transit_balance balance;
	kp_cert *cert;                   /* KP_CARD_ID_CERT: the certificate; kp_cert_free it */
	enum kp_reason reason;           /* KP_R_OK, or why the card cannot be used */
	char detail[256];                /* a My Number card refused: why, naming no one */
};

/* Identifies the card the reader activated (info): a transit IC card by its IDm (then,
 * with KP_CARD_ID_BALANCE, reads its balance block: it proves the card is still in the
 * field), a My Number card by its authentication certificate (SELECT JPKI first; a Type B
 * card without JPKI or a terminal without JPKI CAs: unsupported-card, one APDU). KP_OK,
 * or the error and out->reason (card-removed, card-error, unsupported-card, card-invalid,
 * card-expired, card-not-yet-valid). */
int kp_card_identify(struct kp_reader *r, const struct kp_card_info *info,
                     const struct kp_card_id_cfg *cfg, struct kp_card_id *out);
/* Wipes the token and frees the certificate. */
void kp_card_id_wipe(struct kp_card_id *id);

/* Lets mock My Number cards sign with their RSA keys (see hal/SCENARIO.md). */
void kp_terminal_register_mock_signer(void);

/* ---- card tokens ---- */
/* token = first 16 bytes of HMAC-SHA256(token_key, kind || id); kind is ASCII, e.g. "felica". */
int kp_token_derive(const uint8_t key[KP_TOKEN_KEY_LEN], const char *kind,
                    const uint8_t *id, size_t id_len, uint8_t token[KP_TOKEN_LEN]);
/* Token key files hold 64 hex digits; kp_token_key_create writes a random one with mode 0600. */
int kp_token_key_load(const char *path, uint8_t key[KP_TOKEN_KEY_LEN]);
int kp_token_key_create(const char *path);
void kp_hex(const uint8_t *b, size_t n, char *out /* 2n+1 */);
/* Ids of terminals, operators, products, categories: 1-32 of A-Z a-z 0-9 - _ . */
int  kp_valid_id(const char *s);
int kp_unhex(const char *s, uint8_t *out, size_t n);   /* exactly n bytes */

#endif
