import { ExitCode, OperatorError } from '../errors.js';

/** All configuration problems at once, one line each, and exit 78. */
export function configProblemsError(problems: readonly string[]): OperatorError {
  return new OperatorError(
    `configuration invalid (set these in the environment or in .env):\n${problems.map((p) => `  ${p}`).join('\n')}`,
    ExitCode.configInvalid,
  );
}
