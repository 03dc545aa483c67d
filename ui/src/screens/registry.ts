// The console's screens besides the overview, in navigation order. Each is a thin view over
// engine operations (`Backend`), gets the live overview (pause state, counts) and the router
// (its filters live in the address), and owns its `data-testid="screen-<id>"` root.

import type { Component } from 'svelte';

import type { Backend } from '../lib/backend';
import type { LiveOverview } from '../lib/live.svelte';
import type { Router } from '../lib/router.svelte';
// Replay, Audit log, Contract (issue 7).
import Audit from './Audit.svelte';
import Contract from './Contract.svelte';
import Replay from './Replay.svelte';

export type ScreenProps = { backend: Backend; live: LiveOverview; router: Router };

export type ScreenDef = {
  id: string;
  label: string;
  component: Component<ScreenProps>;
};

export const SCREENS: ScreenDef[] = [
  // Replay, Audit log, Contract (issue 7).
  { id: 'replay', label: 'Replay', component: Replay },
  { id: 'audit', label: 'Audit log', component: Audit },
  { id: 'contract', label: 'Contract', component: Contract },
];
