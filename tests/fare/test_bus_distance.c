/* SPDX-License-Identifier: Apache-2.0 */
/* A distance-fare bus with the real programs: kippuctl imports a zone feed and loads the
 * scheme, kippu-terminal runs a real-paced mock scenario while the "onboard system" moves
 * the bus by rewriting place_file; the rider taps on at S1 and off at S3 and is charged the
 * zone fare; a place file with bad content is logged and the last good place kept; a card
 * left tapped on is charged its maximum fare when the terminal starts again the next day. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"

struct fx {
	char dir[256];
	const char *bin;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	tu_tmpdir(f->dir, sizeof(f->dir));
	f->bin = tu_bin_abs();
	assert_int_equal(tu_sh(
		"cd %s && mkdir feed && cd feed && "
		"printf 'agency_id,agency_name,agency_url,agency_timezone\\nB,Bus,http://b.example,Asia/Tokyo\\n' > agency.txt && "
		"printf 'route_id,agency_id,route_short_name,route_long_name,route_type\\nR,B,R,Harbour,3\\n' > routes.txt && "
		"printf 'stop_id,stop_name,stop_lat,stop_lon,zone_id\\nS1,One,43,141,Z1\\nS2,Two,43,141,Z2\\nS3,Three,43,141,Z3\\n' > stops.txt && "
		"printf 'fare_id,price,currency_type,payment_method,transfers\\nF200,200,JPY,0,0\\nF300,300,JPY,0,0\\nF400,400,JPY,0,0\\n' > fare_attributes.txt && "
		"printf 'fare_id,route_id,origin_id,destination_id\\nF200,R,Z1,Z1\\nF300,R,Z1,Z2\\nF400,R,Z1,Z3\\nF300,R,Z2,Z3\\nF200,R,Z3,Z3\\n' > fare_rules.txt && "
		"cd .. && "
		"%s/kippuctl ca create --key ca.key --cert ca.crt >/dev/null && "
		"%s/kippuctl terminal create --ca-key ca.key --ca-cert ca.crt --id BUS-7 "
		"--key terminal.key --cert terminal.crt >/dev/null && "
		"%s/kippuctl token-key create token.key >/dev/null && "
		"%s/kippuctl fares import feed terminal.db --feed-id zone >/dev/null && "
		"printf 'operator B Zone bus\\nfares B zone distance\\nproduct SV stored B Account\\n"
		"entitlement 1 felica:0101020304050607 SV 1000 2026-11-01T00:00:00+09:00 2027-11-01T00:00:00+09:00\\n' > load.txt && "
		"%s/kippuctl load terminal.db load.txt --token-key token.key >/dev/null && "
		"printf 'terminal_id = BUS-7\\noperator = B\\nroute = R\\nstop = S1\\nreader = mock:scenario.txt\\n"
		"hmi = mock:hmi.log\\nplace_file = place.txt\\npoll_timeout_ms = 100\\n' > terminal.conf",
		f->dir, f->bin, f->bin, f->bin, f->bin, f->bin), 0);
	*state = f;
	return 0;
}

static void test_bus_moves(void **state)
{
	struct fx *f = *state;
	char hmi_path[400], log_path[400], *hmi, *log;
	pid_t pid;

	/* Taps at +1 s (S1) and +6 s. Between them the onboard system moves the bus: once the
	 * tap-on is shown it writes a bad place, then, once that is logged, S3. The place file
	 * is replaced whole (rename), as an onboard system should. */
	snprintf(hmi_path, sizeof(hmi_path), "%s/hmi.log", f->dir);
	snprintf(log_path, sizeof(log_path), "%s/terminal.log", f->dir);
	assert_int_equal(tu_sh(
		"cd %s && printf 'R S1\\n' > place.txt && "
		"printf 'start 2026-12-01T08:00:00+09:00\\npace real\\n"
		"card alice felica idm=0101020304050607 balance=0\\ntap +1 alice\\ntap +6 alice\\n' > scenario.txt",
		f->dir), 0);
	pid = tu_spawn("cd %s && exec %s/kippu-terminal --config terminal.conf 2>terminal.log",
	               f->dir, f->bin);
	tu_wait_text(hmi_path, "show", 1, TU_WAIT_S);
	assert_int_equal(tu_sh("cd %s && printf 'R S3 extra\\n' > p.tmp && mv p.tmp place.txt",
	                       f->dir), 0);
	tu_wait_text(log_path, "want \"ROUTE STOP\"", 1, TU_WAIT_S);
	assert_int_equal(tu_sh("cd %s && printf 'R S3\\n' > p.tmp && mv p.tmp place.txt", f->dir), 0);
	tu_wait_text(log_path, "now at route R stop S3", 1, TU_WAIT_S);
	if (tu_file_count(hmi_path, "show") != 1)
		fail_msg("the tap-off came before the bus reached S3 (a machine too slow for +6 s)");
	assert_int_equal(tu_wait_pid(pid, TU_WAIT_S, "kippu-terminal at the scenario's end"), 0);
	hmi = tu_read(hmi_path);
	log = tu_read(log_path);
	assert_non_null(hmi);
	assert_non_null(log);
	print_message("%s", hmi);
	assert_int_equal(tu_count(hmi, "show"), 2);
	assert_non_null(strstr(hmi, "accepted ok SV 1000"));   /* tap-on: nothing charged */
	assert_non_null(strstr(hmi, "accepted ok SV 600"));    /* tap-off at S3: Z1 -> Z3 400 */
	assert_non_null(strstr(log, "want \"ROUTE STOP\""));    /* the bad place was refused */
	assert_non_null(strstr(log, "now at route R stop S3"));
	assert_int_equal(tu_sh("cd %s && %s/kippuctl journal verify terminal.db --ca ca.crt >/dev/null && "
	                       "%s/kippuctl journal list terminal.db > list.txt && grep -q S3 list.txt",
	                       f->dir, f->bin, f->bin), 0);
	free(hmi);
	free(log);

	/* Next day: tapped on at S1 and never off; the terminal charges the maximum fare (400)
	 * as soon as it starts after the service day ended. */
	assert_int_equal(tu_sh(
		"cd %s && printf 'R S1\\n' > p.tmp && mv p.tmp place.txt && "
		"printf 'start 2026-12-02T08:00:00+09:00\\ncard alice felica idm=0101020304050607\\ntap +0 alice\\n' > scenario.txt && "
		"%s/kippu-terminal --config terminal.conf 2>>terminal.log && "
		"printf 'start 2026-12-03T09:00:00+09:00\\ncard alice felica idm=0101020304050607\\n' > scenario.txt && "
		"%s/kippu-terminal --config terminal.conf 2>>terminal.log && "
		"grep -q 'closed 1 journeys without tap-off' terminal.log && "
		"%s/kippuctl journal verify terminal.db --ca ca.crt >/dev/null",
		f->dir, f->bin, f->bin, f->bin), 0);
	hmi = tu_read(hmi_path);
	assert_non_null(strstr(hmi, "accepted ok SV 600"));
	free(hmi);
	assert_int_equal(tu_sh("cd %s && sqlite3 terminal.db 'SELECT rides_left FROM entitlements' "
	                       "> left.txt && grep -qx 200 left.txt", f->dir), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_bus_moves, setup, tu_dir_fx_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
