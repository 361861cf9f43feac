# SPDX-License-Identifier: Apache-2.0
# The example /etc/kippu/terminal.conf and backend.conf from `kippu-terminal --config-keys` and
# `kippu-backend --config-keys` (a markdown table | `key` | `default` or none | meaning |):
# every key commented out with its default, so each file is made from the parser's own key
# table at build time and cannot drift from it.
# Usage: kippu-terminal --config-keys | awk -f conf-example.awk > terminal.conf
#        kippu-backend --config-keys | awk -v prog=kippu-backend -f conf-example.awk > backend.conf
BEGIN {
	FS = "|"
	if (prog == "")
		prog = "kippu-terminal"
	print "# " prog " configuration (" prog " --config FILE; README, \"Installing\")."
	print "# `key = value` lines, `#` comments. Every key is listed below, commented out, with"
	print "# its default; keys marked (required) must be set. A relative path is taken from"
	print "# this file's folder. An option on the command line wins over the file."
	print "# Generated from `" prog " --config-keys`."
	keys = 0
}
function trim(s) {
	gsub(/^[ \t]+|[ \t]+$/, "", s)
	return s
}
# Table rows only: the header and the --- line are skipped.
NF >= 4 && $2 ~ /`/ {
	key = trim($2); gsub(/`/, "", key)
	def = trim($3)
	doc = trim($4)
	for (i = 5; i < NF; i++)        # a meaning holding a '|'
		doc = doc "|" $i
	doc = trim(doc)
	if (def == "none")
		def = ""
	gsub(/`/, "", def)
	printf "\n# %s\n#%s =%s\n", doc, key, def == "" ? "" : " " def
	keys++
}
END {
	if (keys == 0) {
		print "conf-example.awk: no keys in the input (not `" prog " --config-keys`?)" > "/dev/stderr"
		exit 1
	}
}
