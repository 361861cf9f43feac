/* SPDX-License-Identifier: Apache-2.0 */
/* kippu terminal: the headers of every terminal folder (card, store, fare, tap), for the
 * programs and tools above them. Code inside terminal/ includes the header of the folder
 * it needs, never this one. */
#ifndef KP_TERMINAL_H
#define KP_TERMINAL_H

#include "kp_card.h"
#include "kp_store.h"
#include "kp_fare.h"
#include "kp_tap.h"
#include "kp_client.h"
#include "kp_app.h"

#endif
