/* One text for any error code of the folders backend-sync sees: crypto, TLS, records,
 * sync and the backend store. Each module keeps its own range. */
#include "kp_backend.h"

const char *kp_sync_error_text(int rc)
{
	if (rc <= -0x280 && rc > -0x300)
		return kp_tls_strerror(rc);
	if (rc <= -0x200 && rc > -0x280)
		return kp_crypto_strerror(rc);
	if (rc <= -0x340 && rc > -0x360)
		return kp_sync_strerror(rc);
	if (rc <= -0x360 && rc > -0x380)
		return kp_backend_strerror(rc);
	if (rc <= -0x300 && rc > -0x340)
		return kp_record_strerror(rc);
	return rc == 0 ? "ok" : "unknown error";
}
