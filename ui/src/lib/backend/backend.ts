// The console talks to the engine through this one interface. Two implementations: `tauri.ts`
// (the desktop window: invoke + events) and `http.ts` (`driftless serve`: fetch + SSE). Every
// method rejects with an `ApiFailure` ({code, message}); see ../errors.ts for the words.

import type { ApiError } from '../types/ApiError';
import type { Overview } from '../types/Overview';
import type { PauseRequest } from '../types/PauseRequest';
import type { PauseResult } from '../types/PauseResult';
import type { Status } from '../types/Status';

export type LiveHandlers = {
  /** A fresh overview (about once a second). */
  overview: (o: Overview) => void;
  /** The engine answered with an error, or could not be reached. */
  error: (e: ApiError) => void;
  /** The live connection dropped; it is being re-established. */
  disconnected: () => void;
};

export interface Backend {
  readonly kind: 'tauri' | 'http';
  /** Where the engine is, for messages ("http://127.0.0.1:4000", "the desktop app"). */
  readonly where: string;
  overview(): Promise<Overview>;
  status(): Promise<Status>;
  pauseOutbound(req: PauseRequest): Promise<PauseResult>;
  resumeOutbound(req: PauseRequest): Promise<PauseResult>;
  /** Start receiving live overviews; returns a function that stops. */
  subscribe(handlers: LiveHandlers): () => void;
}
