import { describe, expect, it } from 'vitest';

import { ApiFailure, CLIENT_CODES, explainError, isApiError, toApiError } from './errors';

const where = 'http://127.0.0.1:4000';

describe('explainError', () => {
  it('tells a person the engine is not answering, and where', () => {
    const x = explainError({ code: CLIENT_CODES.unreachable, message: 'Failed to fetch' }, { where });
    expect(x.title).toBe(
      'The driftless engine is not answering at http://127.0.0.1:4000; is `driftless serve` running?',
    );
  });

  it('explains a wrong token without echoing the engine text', () => {
    const x = explainError({ code: 'unauthorized', message: 'missing or wrong token' }, { where });
    expect(x.title).toBe("This link's token is wrong or expired: open the URL driftless printed");
    expect(x.detail).toBeNull();
  });

  it.each(['ledger_locked', 'ledger_error', 'engine_stopped', 'system_unreachable', 'bad_request', 'not_found'])(
    'has its own words for %s',
    (code) => {
      const x = explainError({ code, message: 'engine text' }, { where });
      expect(x.title).not.toMatch(/Something went wrong/);
      expect(x.title.length).toBeGreaterThan(10);
    },
  );

  it('branches on the code, never on the message', () => {
    const a = explainError({ code: 'ledger_locked', message: 'unauthorized' }, { where });
    const b = explainError({ code: 'ledger_locked', message: 'database is locked' }, { where });
    expect(a.title).toBe(b.title);
    expect(a.title).toMatch(/locked/);
  });

  it('keeps an unknown code visible, with the engine message as detail', () => {
    const x = explainError({ code: 'new_thing', message: 'what happened' }, { where });
    expect(x.title).toContain('new_thing');
    expect(x.detail).toBe('what happened');
  });
});

describe('toApiError', () => {
  it('passes ApiError-shaped values through', () => {
    expect(toApiError({ code: 'ledger_locked', message: 'm', extra: 1 })).toEqual({ code: 'ledger_locked', message: 'm' });
    expect(toApiError(new ApiFailure({ code: 'x', message: 'y' }))).toEqual({ code: 'x', message: 'y' });
  });

  it('wraps strings, errors and anything else', () => {
    expect(toApiError('boom')).toEqual({ code: 'unknown', message: 'boom' });
    expect(toApiError(new TypeError('bad'))).toEqual({ code: 'unknown', message: 'bad' });
    expect(toApiError(42)).toEqual({ code: 'unknown', message: '42' });
  });

  it('recognises ApiError values', () => {
    expect(isApiError({ code: 'a', message: 'b' })).toBe(true);
    expect(isApiError({ code: 'a' })).toBe(false);
    expect(isApiError(null)).toBe(false);
  });
});
