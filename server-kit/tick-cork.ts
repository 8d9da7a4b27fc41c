// Coalesces the messages written to one link socket during an event-loop turn into one
// write. A gateway link carries every session routed to its server, and under load one turn
// of the loop relays frames for many of them; ws writes each message with its own writev,
// and that syscall was the largest single cost in the server process's profile. The bytes
// on the wire are the same, in the same order: only the number of writes changes.
// Nothing waits longer than the current turn: the socket is uncorked in the check phase
// that follows the poll phase in which the messages were written (and libuv does not block
// in poll while an immediate is pending).
import type { Socket } from 'node:net';

/** Returns `hold()`: call it before a send; the socket's writes until the turn ends go out together. */
export function tickCorker(socket: Socket): () => void {
  let held = false;
  const flush = () => {
    held = false;
    socket.uncork();
  };
  return () => {
    if (held || socket.destroyed) return;
    held = true;
    socket.cork();
    setImmediate(flush);
  };
}
