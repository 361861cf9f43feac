/* SPDX-License-Identifier: Apache-2.0 */
/* kippu hardware abstraction: readers (frames in, frames out), the HMI and the clock.
 * Nothing above this header knows whether a card is real. Backends are found by the
 * scheme of a connection string ("mock:scenario.txt", "libnfc:pn532_uart:/dev/ttyUSB0"). */
#ifndef KP_HAL_H
#define KP_HAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum kp_hal_rc {
	KP_HAL_OK         = 0,
	KP_HAL_E_IO       = -0x101, /* the reader failed */
	KP_HAL_E_TIMEOUT  = -0x102, /* no reply in time (a card that stays silent) */
	KP_HAL_E_NOCARD   = -0x103, /* no card in the field (wait_card timed out, card gone) */
	KP_HAL_E_NOTSUP   = -0x104, /* this backend cannot do that */
	KP_HAL_E_INVAL    = -0x105, /* bad argument */
	KP_HAL_E_NOMEM    = -0x106,
	KP_HAL_E_CONFIG   = -0x107, /* bad connection string or scenario file */
	KP_HAL_E_OVERFLOW = -0x108, /* the reply does not fit the caller's buffer */
	KP_HAL_E_END      = -0x109, /* a mock scenario has no more taps */
};

const char *kp_hal_strerror(int rc);

enum kp_card_tech {
	KP_TECH_NONE      = 0,
	KP_TECH_FELICA    = 1 << 0,
	KP_TECH_ISO14443A = 1 << 1,
	KP_TECH_ISO14443B = 1 << 2,
};

/* Activation data, as a reader chip reports it after anti-collision. */
struct kp_card_info {
	enum kp_card_tech tech;
	unsigned baud_kbps;              /* 212/424 for FeliCa, 106 for ISO 14443 */
	union {
		struct {
			uint8_t idm[8];
			uint8_t pmm[8];
			uint8_t sys_code[2];     /* big-endian; valid when has_sys_code */
			int has_sys_code;
		} felica;
		struct {
			uint8_t uid[10];
			size_t uid_len;
			uint8_t atqa[2];
			uint8_t sak;
		} a;
		struct {
			uint8_t atqb[12];        /* 50 PUPI(4) AppData(4) ProtoInfo(3) */
			uint8_t pupi[4];
			uint8_t app_data[4];
			uint8_t proto_info[3];
		} b;
	} u;
};

/* What to poll for. */
struct kp_poll {
	unsigned techs;                  /* bitmask of enum kp_card_tech */
	uint16_t felica_sys_code;        /* 0x0003 transit IC, 0xFFFF wildcard */
	uint8_t felica_request_code;     /* 0 none, 1 system code, 2 comm. performance */
};

struct kp_reader;                    /* what a backend allocates behind its ops */

struct kp_reader_ops {
	const char *scheme;              /* "mock", "libnfc" */
	/* conn is what follows "scheme:" in the string given to kp_reader_open ("" for a
	 * bare "scheme"); the backend sets (*out)->ops. */
	int  (*open)(struct kp_reader **out, const char *conn);
	/* Waits up to timeout_ms (-1: forever) for a card matching poll. */
	int  (*wait_card)(struct kp_reader *r, const struct kp_poll *poll,
	                  struct kp_card_info *info, int timeout_ms);
	/* One frame out, one frame in: a FeliCa packet (with its LEN byte) or an APDU. */
	int  (*transceive)(struct kp_reader *r, const uint8_t *tx, size_t tx_len,
	                   uint8_t *rx, size_t rx_cap, size_t *rx_len, int timeout_ms);
	/* Ends the session with the card; waits (up to timeout_ms) for it to leave
	 * when wait_removed is set. */
	int  (*release)(struct kp_reader *r, int wait_removed, int timeout_ms);
	/* Milliseconds since the Unix epoch as this reader sees them (a mock scenario's
	 * virtual time); KP_HAL_E_NOTSUP means "use the system clock". */
	int  (*now_ms)(struct kp_reader *r, int64_t *ms);
	/* A one-line human description (backend, device, firmware). */
	int  (*describe)(struct kp_reader *r, char *buf, size_t cap);
	/* The backend's own account of its last failure ("" if none), e.g. libnfc's text. */
	int  (*last_error)(struct kp_reader *r, char *buf, size_t cap);
	void (*close)(struct kp_reader *r);
	/* Optional: open, with why it failed in err (err_cap > 0). A backend without it is
	 * opened with open, and err stays "". */
	int  (*open_err)(struct kp_reader **out, const char *conn, char *err, size_t err_cap);
};

/* Every reader handle starts with this, so generic code can find its ops. */
struct kp_reader {
	const struct kp_reader_ops *ops;
};

/* Registry: backends are found by scheme; the const op tables stay separate. The mock
 * backends are built in. Registering a table twice is fine; another table under a taken
 * scheme is KP_HAL_E_INVAL. kp_reader_open: unknown scheme -> KP_HAL_E_CONFIG. */
int kp_reader_register(const struct kp_reader_ops *ops);
int kp_reader_open(struct kp_reader **out, const char *conn);
/* The same; err gets the backend's account of a failure ("" when it has none). */
int kp_reader_open_err(struct kp_reader **out, const char *conn, char *err, size_t err_cap);
int kp_reader_wait_card(struct kp_reader *r, const struct kp_poll *poll,
                        struct kp_card_info *info, int timeout_ms);
int kp_reader_transceive(struct kp_reader *r, const uint8_t *tx, size_t tx_len,
                         uint8_t *rx, size_t rx_cap, size_t *rx_len, int timeout_ms);
int kp_reader_release(struct kp_reader *r, int wait_removed, int timeout_ms);
int kp_reader_describe(struct kp_reader *r, char *buf, size_t cap);
/* What the backend knows about its last failure, for logs (never card IDs); buf gets ""
 * and KP_HAL_E_NOTSUP from a backend that keeps no such text. */
int kp_reader_last_error(struct kp_reader *r, char *buf, size_t cap);
/* A time written by a person: "YYYY-MM-DDThh:mm:ss[.fff]" with "Z", "+hh:mm", "-hh:mm",
 * "+hhmm" or "-hhmm" (at most 14:00), or Unix seconds (digits only), from 1970 to 9999-12-31;
 * every field exactly as many digits as written here, no sign or space inside. *ms gets
 * milliseconds since the epoch, *offset_s the offset written (0 for Z and Unix seconds).
 * 0, or -1 for anything else. The one parser of such times in kippu. */
int kp_time_parse(const char *s, int64_t *ms, int *offset_s);
/* Reader's virtual time if it has one, else CLOCK_REALTIME. Never fails. */
int64_t kp_reader_now_ms(struct kp_reader *r);
void kp_reader_close(struct kp_reader *r);

extern const struct kp_reader_ops kp_mock_reader_ops;

/* ---- mock My Number cards ("card NAME mynumber ..." in a scenario, hal/SCENARIO.md) ----
 * COMPUTE DIGITAL SIGNATURE needs RSA, and hal/ links no crypto: whoever links crypto/
 * (terminal, tools, tests) registers a signer before opening a mock reader. The card calls
 * sign(ctx, key, key_len, di, di_len, sig, sig_cap, sig_len) with its auth.key file's bytes
 * (PEM or DER; key[key_len] is a NUL, not counted) and the DigestInfo of the APDU; sign
 * returns 0 with the RSA PKCS#1 v1.5 signature in sig (at most sig_cap = 256 bytes), or
 * non-zero. Without a signer, or when it fails, the card answers 6F 00. NULL unregisters.
 * Process-wide; not to be changed while a mock reader is in use on another thread.
 * With crypto/:  kp_rsa_parse(&k, key, key_len) then kp_rsa_sign_digestinfo(k, di, di_len,
 * sig, sig_cap, sig_len) and kp_rsa_free(k). */
void kp_mock_set_rsa_signer(int (*sign)(void *ctx, const uint8_t *key, size_t key_len,
                                        const uint8_t *di, size_t di_len, uint8_t *sig,
                                        size_t sig_cap, size_t *sig_len),
                            void *ctx);

/* What a mock My Number card has been asked, since its reader opened. Tests read it to
 * show that kippu never selects the input-support or card-face AP. */
struct kp_mock_jpki_stats {
	unsigned long select_jpki;           /* SELECT DF of the JPKI AP that succeeded */
	unsigned long select_input_support;  /* SELECT DF of D3 92 10 00 31 00 01 01 04 08 */
	unsigned long select_card_face;      /* SELECT DF of D3 92 10 00 31 00 01 01 04 02 */
	unsigned long forbidden_apdus;       /* other APDUs while one of those two was selected */
	unsigned long read_binary;           /* READ BINARY answered with data */
	unsigned long verify_ok, verify_wrong; /* VERIFY with a PIN: right, wrong */
	unsigned long signatures;            /* signatures given */
	unsigned tries_left;                 /* the PIN retry counter now; 0: blocked */
};
/* Copies the counters of the mynumber card called card (its scenario name) of mock reader
 * r (or of the mock reader a spy reader wraps). KP_HAL_E_NOTSUP: r is not a mock reader; KP_HAL_E_INVAL: no mynumber card of that
 * name. */
int kp_mock_jpki_stats(struct kp_reader *r, const char *card, struct kp_mock_jpki_stats *out);

/* ---- the spy reader ("spy:CONFIG", hal/SCENARIO.md), a test facility ----
 * Wraps a mock reader (mock: only, never a real one), logs every frame (cards by session
 * number, reply data by its length, a VERIFY's PIN masked) and answers chosen APDUs in the
 * card's place: "reply MATCH REPLY [card=N] [times=K]" lines. Built in, like mock. */
extern const struct kp_reader_ops kp_spy_reader_ops;
struct kp_spy_stats {
	unsigned long sessions;              /* card sessions (wait_card successes) */
	unsigned long frames;                /* frames the terminal sent */
	unsigned long overridden;            /* answered by a reply rule instead of the card */
	unsigned long verify_with_pin;       /* VERIFY APDUs that carried a PIN (Type B) */
	unsigned long verify_sessions;       /* card sessions that got at least one */
	unsigned long max_verify_per_session;
};
/* KP_HAL_E_NOTSUP if r is not a spy reader. */
int kp_spy_stats(struct kp_reader *r, struct kp_spy_stats *out);
/* The reader a spy wraps (r itself if r is no spy). */
struct kp_reader *kp_spy_inner(struct kp_reader *r);

/* ---- the libnfc backend: real PN53x readers (hal/libnfc.c) ----
 * "libnfc" opens libnfc's default device (LIBNFC_DEFAULT_DEVICE, LIBNFC_DEVICE or
 * /etc/nfc/libnfc.conf); "libnfc:CONN" opens CONN, e.g. "libnfc:pn532_uart:/dev/ttyUSB0"
 * or "libnfc:pn532_uart:/dev/ttyUSB0:115200" (a port path cannot contain ':').
 * wait_card polls FeliCa at 212 then 424 kbps, then Type B, then Type A, as requested, and
 * skips a card that was never seen to leave after its last session (one tap, not many);
 * transceive sends FeliCa frames (with LEN) and APDUs (at most 262 bytes); release waits
 * (when asked) for the card to leave, then deselects, and says KP_HAL_E_TIMEOUT if it
 * stayed; no clock (now_ms falls back to the system's). Errors: a card that does not answer
 * (libnfc's timeout or RF error) is KP_HAL_E_TIMEOUT in transceive; no card is
 * KP_HAL_E_NOCARD; a reader that fails or does not answer is KP_HAL_E_IO (close and reopen
 * it); what libnfc cannot do is KP_HAL_E_NOTSUP. libnfc's text for the last failure:
 * kp_reader_last_error. */
extern const struct kp_reader_ops kp_libnfc_reader_ops;
/* Lists the devices libnfc finds (configured or scanned), one "CONNSTRING\tNAME\n" line
 * each, into buf; *n_found counts them. KP_HAL_E_OVERFLOW if buf is too small. */
int kp_libnfc_list(char *buf, size_t cap, size_t *n_found);
/* What follows "libnfc:" -> the libnfc connection string to open ("" = the default
 * device); out must not overlap conn. KP_HAL_E_CONFIG for an unknown driver, spaces,
 * control characters, a serial driver without a port, an empty field or a speed that is
 * not a number. Exposed for tests. */
int kp_libnfc_parse_conn(const char *conn, char *out, size_t cap);
/* A libnfc error code (NFC_E*) as a HAL code; card_exchange: during a transceive (a
 * timeout or RF error means the card did not answer) rather than a reader operation (a
 * timeout means the reader did not). Exposed for tests. */
int kp_libnfc_map_error(int nfc_error, int card_exchange);

/* ---- HMI: what a rider sees and hears ---- */

enum kp_hmi_result { KP_HMI_ACCEPTED = 1, KP_HMI_REFUSED = 2, KP_HMI_ALREADY = 3, KP_HMI_INFO = 4 };
enum kp_led { KP_LED_OFF = 0, KP_LED_GREEN, KP_LED_RED, KP_LED_AMBER, KP_LED_BLUE };
enum kp_beep { KP_BEEP_OK = 1, KP_BEEP_ERROR = 2, KP_BEEP_NOTICE = 3 };

struct kp_hmi_msg {
	enum kp_hmi_result result;
	const char *reason;              /* machine code: "ok", "denylisted", "expired", ... */
	const char *text;                /* what the display says, one line */
	const char *product;             /* product id or NULL */
	int64_t rides_left;              /* -1 when not applicable */
	int64_t time_ms;
};

struct kp_hmi;
struct kp_hmi_ops {
	const char *scheme;              /* "mock" */
	/* conn is what follows "scheme:" ("" for a bare "scheme"), as for readers. */
	int  (*open)(struct kp_hmi **out, const char *conn);
	/* Optional: open telling what is wrong in err (kp_hmi_open_err), as for readers. */
	int  (*open_err)(struct kp_hmi **out, const char *conn, char *err, size_t err_cap);
	int  (*show)(struct kp_hmi *h, const struct kp_hmi_msg *msg);
	int  (*beep)(struct kp_hmi *h, enum kp_beep pattern);
	int  (*led)(struct kp_hmi *h, enum kp_led colour);
	void (*close)(struct kp_hmi *h);
};
struct kp_hmi {
	const struct kp_hmi_ops *ops;
};

int kp_hmi_register(const struct kp_hmi_ops *ops);
int kp_hmi_open(struct kp_hmi **out, const char *conn);
/* The same, with what is wrong in err ("" when the backend says nothing more). */
int kp_hmi_open_err(struct kp_hmi **out, const char *conn, char *err, size_t err_cap);
int kp_hmi_show(struct kp_hmi *h, const struct kp_hmi_msg *msg);
int kp_hmi_beep(struct kp_hmi *h, enum kp_beep pattern);
int kp_hmi_led(struct kp_hmi *h, enum kp_led colour);
void kp_hmi_close(struct kp_hmi *h);

extern const struct kp_hmi_ops kp_mock_hmi_ops;

/* The mock HMI keeps every event in memory (tests read them) and, when opened as
 * "mock:PATH" or "mock:-", also writes one line per event to PATH or stdout (then only the
 * last 1024 events stay in memory: kp_mock_hmi_count counts them all, kp_mock_hmi_event
 * gives NULL for an older one):
 *   show <time_ms> <accepted|refused|already|info> <reason> <product|-> <rides_left> <text>
 *   beep <ok|error|notice>
 *   led <off|green|red|amber|blue>                                                   */
struct kp_hmi_event {
	char kind[8];                    /* "show", "beep", "led" */
	enum kp_hmi_result result;
	char reason[32];
	char product[32];
	int64_t rides_left;
	int64_t time_ms;
	char text[128];
	int value;                       /* beep pattern or LED colour */
};
size_t kp_mock_hmi_count(const struct kp_hmi *h);
const struct kp_hmi_event *kp_mock_hmi_event(const struct kp_hmi *h, size_t i);

const char *kp_hmi_result_name(enum kp_hmi_result r);
const char *kp_led_name(enum kp_led l);
const char *kp_beep_name(enum kp_beep b);

/* The monotonic clock in milliseconds (for deadlines, never for the tap's time), and a sleep
 * of ms milliseconds that resumes after signals (ms <= 0: none). */
int64_t kp_hal_mono_ms(void);
void kp_hal_sleep_ms(int64_t ms);
/* A log file opened for appending, created mode 0600 whatever the umask (the mock HMI's log,
 * the spy reader's, the PN532 emulator's); NULL with errno on failure. */
FILE *kp_hal_open_log(const char *path);

#endif
