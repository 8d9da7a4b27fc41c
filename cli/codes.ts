// The codes the `usbphone` command reports itself, each with the one exit code it always
// has, whichever command reports it (docs/errors.md §"CLI" lists the same; a test checks).
// Codes from the library (ImplementationError, ProtocolError: KEY_*, LAYOUT_*, CFG_*, ...)
// keep their own names and exit 2 (unusable input) unless named here.
export const CLI_CODES: Record<string, { exit: 0 | 1 | 2 | 141; meaning: string }> = {
  CLI_UNKNOWN_COMMAND: { exit: 2, meaning: 'no such subcommand' },
  CLI_BAD_ARGS: { exit: 2, meaning: 'an unknown option, a missing or empty value, a number out of range, or an option that does not apply to what was asked' },
  CLI_UNKNOWN_SCENARIO: { exit: 2, meaning: '`sim --scenario` names no story' },
  CLI_NO_STATE: { exit: 2, meaning: '`--state` names a directory that does not exist (`enroll` creates it only with `--create`), or, for `sim --gateway`, one without the servers\' keys' },
  CLI_STATE_NOT_DIR: { exit: 2, meaning: '`--state` names something that is not a directory' },
  CLI_FILE: { exit: 2, meaning: 'a named input file cannot be read (missing, a directory, no permission)' },
  CLI_CORRUPT_FILE: { exit: 2, meaning: 'a state or input file is damaged (not JSON, not a SQLite database, not a flash image): the message names it and says what to do' },
  CLI_NOT_INSTALLED: { exit: 2, meaning: "the dependencies are not installed (`npm ci`, or any `make` target): printed by `bin/usbphone.js`" },
  CLI_INTERNAL: { exit: 1, meaning: 'an unexpected error (a bug): one line, no stack trace' },
  SIM_PORT_IN_USE: { exit: 1, meaning: "the single phone's servers cannot listen: their ports are taken (a running `make serve`? then use `--gateway`)" },
  SIM_NO_GATEWAY: { exit: 1, meaning: '`sim --gateway URL`: no gateway answers at URL' },
  SIM_LINE_CONFLICT: { exit: 1, meaning: "`sim --sim-card/--iccid`: the operator's store has the card's number on another card, or the card on another number (`--swap-sim` moves a line to a new card)" },
  SIM_STACK_START: { exit: 1, meaning: "a fleet's server process did not start (or exited before listening)" },
  SERVE_LISTEN_FAILED: { exit: 1, meaning: 'a port is in use or not allowed' },
  SERVE_FAILED: { exit: 1, meaning: 'a server could not start for another reason (what it created is removed)' },
  IMAGE_WRITE_FAILED: { exit: 1, meaning: 'the image, fuses or key file cannot be written (nothing is left half-written)' },
  INSPECT_NO_FILE: { exit: 2, meaning: 'the image file does not exist' },
  INSPECT_TOO_BIG: { exit: 2, meaning: 'the image is larger than 1 GiB (refused before reading)' },
  INSPECT_BAD_WEAR: { exit: 2, meaning: '`--wear-file` is not a wear sidecar for this image' },
  ENROLL_CONFLICT: { exit: 1, meaning: 'the serial, account or user name is already bound to another' },
  ENROLL_UNKNOWN_SERIAL: { exit: 1, meaning: '`--disable` / `--enable` of a serial not enrolled' },
  ENROLL_FAILED: { exit: 1, meaning: 'an unexpected failure while enrolling' },
  CONFORMANCE_UNREACHABLE: { exit: 1, meaning: '`conformance --target URL`: no WebSocket server answers at URL' },
  CONFORMANCE_NO_CASE: { exit: 2, meaning: '`conformance --case PATTERN` matches no case' },
  SIMULATE_VIOLATION: { exit: 1, meaning: '`simulate`: a seed broke an invariant (each failing seed is printed with its replay command)' },
  CONFORMANCE_LISTEN_FAILED: { exit: 1, meaning: '`conformance --device CMD`: the suite cannot listen on `--listen HOST:PORT` (in use, or not allowed)' },
};

/** The exit code of a code: the CLI's own table, else 2 (library codes: unusable input). */
export const exitOf = (code: string): number => CLI_CODES[code]?.exit ?? 2;
