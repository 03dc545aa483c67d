import { defineConfig } from 'vitest/config';
import { svelte } from '@sveltejs/vite-plugin-svelte';

// `npm run dev` proxies the API to a running `driftless serve` (set DRIFTLESS_URL, e.g.
// http://127.0.0.1:4000), then open http://localhost:5173/?token=<the printed token>.
const engine = process.env.DRIFTLESS_URL;

export default defineConfig({
  plugins: [svelte()],
  // Relative asset paths: the build is served from the server root by `driftless serve`
  // and from Tauri's custom protocol; "./" works for both.
  base: './',
  build: {
    outDir: 'dist',
    assetsDir: 'assets', // the server caches `assets/*` as immutable
    emptyOutDir: true,
    target: 'es2022',
    chunkSizeWarningLimit: 600,
  },
  server: engine
    ? { proxy: { '/api': { target: engine, changeOrigin: false } } }
    : undefined,
  // Under vitest, resolve Svelte's browser build so `mount` works in jsdom.
  resolve: process.env.VITEST ? { conditions: ['browser'] } : undefined,
  test: {
    environment: 'jsdom',
    include: ['src/**/*.test.ts'],
    restoreMocks: true,
  },
});
