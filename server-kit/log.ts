// Structured log lines (one JSON object per line) for the servers. Callers pass only
// non-secret fields: codes, names, generations, counts, addresses. No key, secret, login key
// or session key is ever a field (server-kit/logs.test.ts scans a full flow's log for them).
// The sink is process-wide so a test can capture every server's lines at once.

export type Level = 'debug' | 'info' | 'warn' | 'error';
export type LogField = string | number | boolean | null | undefined;
export interface LogLine { t: string; level: Level; svc: string; msg: string; [k: string]: LogField }
export type LogSink = (line: LogLine) => void;

const order: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

const stderrSink: LogSink = (line) => {
  process.stderr.write(JSON.stringify(line) + '\n');
};

let sink: LogSink = stderrSink;
let minLevel: Level = (['debug', 'info', 'warn', 'error'] as const).find((l) => l === process.env.USBPHONE_LOG_LEVEL) ?? 'info';

/** Replaces the process-wide sink (tests capture lines); returns the previous one. */
export function setLogSink(next: LogSink | null, level?: Level): LogSink {
  const prev = sink;
  sink = next ?? stderrSink;
  if (level) minLevel = level;
  return prev;
}

const listeners = new Set<LogSink>();

/**
 * Also hands every line of level info and above to `fn`, whatever the sink and the level
 * (the live page's hub projects a few fields of some lines into its feed); returns the remover.
 */
export function addLogListener(fn: LogSink): () => void {
  listeners.add(fn);
  return () => void listeners.delete(fn);
}

export function setLogLevel(level: Level): void {
  minLevel = level;
}

export function logLevel(): Level {
  return minLevel;
}

export interface Logger {
  debug(msg: string, fields?: Record<string, LogField>): void;
  info(msg: string, fields?: Record<string, LogField>): void;
  warn(msg: string, fields?: Record<string, LogField>): void;
  error(msg: string, fields?: Record<string, LogField>): void;
}

export function createLogger(svc: string): Logger {
  const emit = (level: Level, msg: string, fields?: Record<string, LogField>) => {
    const toSink = order[level] >= order[minLevel];
    const toListeners = listeners.size > 0 && order[level] >= order.info;
    if (!toSink && !toListeners) return;
    const line: LogLine = { t: new Date().toISOString(), level, svc, msg, ...fields };
    if (toSink) sink(line);
    if (toListeners) for (const l of listeners) l(line);
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
  };
}
