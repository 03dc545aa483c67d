import type { Backend } from './backend';
import { HttpBackend } from './http';

export type { Backend, LiveHandlers } from './backend';

/** True inside the Tauri desktop window. */
export function inTauri(w: object = window): boolean {
  return '__TAURI_INTERNALS__' in w;
}

/** The backend for wherever this page runs. The Tauri code is only loaded in the window. */
export async function createBackend(): Promise<Backend> {
  if (inTauri()) {
    const { TauriBackend } = await import('./tauri');
    return new TauriBackend();
  }
  return HttpBackend.fromLocation();
}
