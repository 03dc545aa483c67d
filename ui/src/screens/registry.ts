// The console's screens besides the overview, in navigation order. Each is a thin view over
// engine operations (`Backend`), gets the live overview (pause state, counts) and the router
// (its filters live in the address), and owns its `data-testid="screen-<id>"` root.

import type { Component } from 'svelte';

import type { Backend } from '../lib/backend';
import type { LiveOverview } from '../lib/live.svelte';
import type { Router } from '../lib/router.svelte';
import DeadLetters from './DeadLetters.svelte';

export type ScreenProps = { backend: Backend; live: LiveOverview; router: Router };

export type ScreenDef = {
  id: string;
  label: string;
  component: Component<ScreenProps>;
};

export const SCREENS: ScreenDef[] = [
  { id: 'dead-letters', label: 'Dead letters', component: DeadLetters },
];
