// The one place where API error codes become words for people. Branch on `code` only —
// never on `message`, which is for display (and may change wording at any time).

import type { ApiError } from './types/ApiError';

/** Codes the console makes up itself (the engine never sends these). */
export const CLIENT_CODES = {
  /** The request never reached the engine (connection refused, reset, DNS…). */
  unreachable: 'engine_unreachable',
  /** The engine answered with something that is not JSON we understand. */
  badResponse: 'bad_response',
} as const;

export type Explained = {
  /** One short line: what is wrong. */
  title: string;
  /** What to do about it (may be empty). */
  hint: string;
  /** The engine's own words, shown smaller, when they add something. */
  detail: string | null;
};

export type ErrorContext = {
  /** Where the engine is expected, e.g. "http://127.0.0.1:4000" or "the desktop app". */
  where: string;
};

export function explainError(err: ApiError, ctx: ErrorContext): Explained {
  const detail = err.message?.trim() ? err.message.trim() : null;
  switch (err.code) {
    case CLIENT_CODES.unreachable:
      return {
        title: `The driftless engine is not answering at ${ctx.where}; is \`driftless serve\` running?`,
        hint: 'Start it again (make run, or driftless serve) and open the URL it prints. This page retries on its own.',
        detail,
      };
    case 'unauthorized':
      return {
        title: "This link's token is wrong or expired: open the URL driftless printed",
        hint: 'Each start of driftless prints a new console URL with its own token (…/?token=…).',
        detail: null,
      };
    case 'ledger_locked':
      return {
        title: 'The ledger is locked by another driftless process',
        hint: 'Only one engine can own a ledger at a time. Stop the other process, or point this one at its own ledger.',
        detail,
      };
    case 'ledger_error':
      return {
        title: 'The engine could not read its ledger',
        hint: 'Check the disk and the ledger file; the engine log has the details.',
        detail,
      };
    case 'engine_stopped':
      return {
        title: 'The driftless engine has stopped',
        hint: 'It is shutting down or crashed. Start it again and open the URL it prints.',
        detail,
      };
    case 'system_unreachable':
      return {
        title: 'A connected system (CRM or billing) is not answering',
        hint: 'Writes wait and retry on their own. Check the system status, or pause outbound writes.',
        detail,
      };
    case 'bad_request':
      return { title: 'The engine refused this request', hint: '', detail };
    case 'not_found':
      return {
        title: 'This engine does not know that request',
        hint: 'The console and the engine may be from different versions: rebuild driftless.',
        detail,
      };
    case CLIENT_CODES.badResponse:
      return {
        title: 'The engine sent an answer this console does not understand',
        hint: 'The console and the engine may be from different versions: rebuild driftless.',
        detail,
      };
    default:
      return {
        title: `Something went wrong (${err.code || 'unknown error'})`,
        hint: '',
        detail,
      };
  }
}

export function isApiError(x: unknown): x is ApiError {
  return (
    typeof x === 'object' &&
    x !== null &&
    typeof (x as ApiError).code === 'string' &&
    typeof (x as ApiError).message === 'string'
  );
}

/** Whatever was thrown or rejected, as an ApiError (Tauri rejects with ApiError or a string). */
export function toApiError(x: unknown): ApiError {
  if (isApiError(x)) return { code: x.code, message: x.message };
  if (typeof x === 'string') return { code: 'unknown', message: x };
  if (x instanceof Error) return { code: 'unknown', message: x.message };
  return { code: 'unknown', message: String(x) };
}

/** A rejection carrying an ApiError, so `catch (e)` code can stay typed. */
export class ApiFailure extends Error implements ApiError {
  code: string;
  constructor(err: ApiError) {
    super(err.message);
    this.name = 'ApiFailure';
    this.code = err.code;
  }
}
