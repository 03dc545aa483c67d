import { mount } from 'svelte';

import App from './App.svelte';
import './app.css';
import { createBackend } from './lib/backend';

const target = document.getElementById('app')!;

createBackend().then(
  (backend) => mount(App, { target, props: { backend } }),
  (e) => {
    // Never a blank page: say what happened in words.
    target.textContent = `The driftless console could not start: ${e instanceof Error ? e.message : String(e)}`;
  },
);
