// The one logger shape every module takes: pino's calling convention (fields first, message second), so the server
// passes its pino instance and tests pass silentLogger or a recorder.

export interface Logger {
  info(obj: object | string, msg?: string): void;
  warn(obj: object | string, msg?: string): void;
  error(obj: object | string, msg?: string): void;
  debug(obj: object | string, msg?: string): void;
}

export const silentLogger: Logger = { info() {}, warn() {}, error() {}, debug() {} };
