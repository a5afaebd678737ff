// Shared CLI pieces: user errors, wording, and the parsers of flags that are not run options
// (those come from their table: cli/options.ts).

import { InvalidArgumentError } from 'commander';
import { bundledFashionMnistPath } from '../src/train/datasets.js';
import { decimalNumber } from '../src/train/options.js';

export { decimalNumber };

/** The package's version (package.json's), for --version and the files we write. */
export const PACKAGE_VERSION = '0.1.0';

/** A mistake the user can fix: printed without a stack trace (unless --verbose), exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

export const BUNDLED_FASHION_MNIST = bundledFashionMnistPath;

// ---------------------------------------------------------------------------------------------
// Wording
// ---------------------------------------------------------------------------------------------

/** "1 epoch", "3 epochs", "1 batch", "10 batches". */
export function plural(n: number, singular: string, pluralForm = `${singular}s`): string {
  return `${n} ${n === 1 ? singular : pluralForm}`;
}

/** A fraction as "85.60%"; a figure that does not exist (NaN: top-5 of 5 classes, an empty class) as "n/a". */
export function percent(fraction: number): string {
  return Number.isNaN(fraction) ? 'n/a' : `${(100 * fraction).toFixed(2)}%`;
}

// ---------------------------------------------------------------------------------------------
// Flag parsers: errors name the flag and the allowed values.
// ---------------------------------------------------------------------------------------------

export function numberIn(flag: string, min: number, max: number, options: { integer?: boolean; minExclusive?: boolean; maxExclusive?: boolean } = {}) {
  return (value: string): number => {
    const v = decimalNumber(value);
    const okMin = options.minExclusive ? v > min : v >= min;
    const okMax = options.maxExclusive ? v < max : v <= max;
    if (value.trim() === '' || !Number.isFinite(v) || !okMin || !okMax || (options.integer && !Number.isInteger(v))) {
      const range = `${options.minExclusive ? '(' : '['}${min}, ${max === Infinity ? 'inf)' : `${max}${options.maxExclusive ? ')' : ']'}`}`;
      throw new InvalidArgumentError(`${flag} must be ${options.integer ? 'an integer' : 'a number'} in ${range}, got '${value}'.`);
    }
    return v;
  };
}

export function oneOf<T extends string>(flag: string, allowed: readonly T[]) {
  return (value: string): T => {
    if (!(allowed as readonly string[]).includes(value)) throw new InvalidArgumentError(`${flag} must be one of ${allowed.join(', ')}, got '${value}'.`);
    return value as T;
  };
}

