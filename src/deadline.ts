/** Deadlines for work that must end on time (a probe, a token exchange), with when they fall. */

/**
 * An AbortSignal that fires after `ms` (or when `parent` aborts) and knows when (for lock
 * timeouts). A controller and a timer rather than AbortSignal.any(), whose signal holds its
 * sources weakly: a collected timeout would leave a probe without its deadline.
 */
export function deadlineSignal(ms: number, parent?: AbortSignal): AbortSignal {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new DOMException(`no answer within ${ms} ms`, 'TimeoutError')), ms);
  // The probe it bounds keeps the process busy; the timer alone must not.
  timer.unref();
  if (parent?.aborted) controller.abort(parent.reason);
  else parent?.addEventListener('abort', () => controller.abort(parent.reason), { once: true });
  controller.signal.addEventListener('abort', () => clearTimeout(timer), { once: true });
  return Object.assign(controller.signal, { deadlineAt: Date.now() + ms });
}
