// The console's screens besides the overview, in navigation order. Each is a thin view over
// engine operations (`Backend`), gets the live overview (pause state, counts) and the router
// (its filters live in the address), and owns its `data-testid="screen-<id>"` root.

import type { Component } from 'svelte';

import type { Backend } from '../lib/backend';
import type { LiveOverview } from '../lib/live.svelte';
import type { Router } from '../lib/router.svelte';
import Audit from './Audit.svelte';
import Connect from './Connect.svelte';
import Contract from './Contract.svelte';
import DeadLetters from './DeadLetters.svelte';
import Reconciliation from './Reconciliation.svelte';
import Records from './Records.svelte';
import Replay from './Replay.svelte';
import Review from './Review.svelte';

export type ScreenProps = { backend: Backend; live: LiveOverview; router: Router };

export type ScreenDef = {
  id: string;
  label: string;
  component: Component<ScreenProps>;
};

// In the order an operator works an incident: what failed, what needs a person, re-run, follow
// one record, what happened, the rules in force.
export const SCREENS: ScreenDef[] = [
  { id: 'dead-letters', label: 'Dead letters', component: DeadLetters },
  { id: 'review', label: 'Review', component: Review },
  { id: 'replay', label: 'Replay', component: Replay },
  { id: 'reconciliation', label: 'Reconciliation', component: Reconciliation },
  { id: 'records', label: 'Records', component: Records },
  { id: 'audit', label: 'Audit log', component: Audit },
  { id: 'contract', label: 'Contract', component: Contract },
  { id: 'connect', label: 'Connect', component: Connect },
];
