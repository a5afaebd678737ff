// Reductions over plain arrays and typed arrays that never spread them into arguments.
//
// Spreading an array into Math.max passes every element as a call argument, and V8 overflows the call
// stack somewhere past ~100k of them: a tensor of a real model, or a 1000-class confusion
// matrix, is far larger. These loops work for any length.

/** The largest value (-Infinity for an empty array); NaN entries are skipped. */
export function maxOf(values: ArrayLike<number>): number {
  let max = -Infinity;
  for (let i = 0; i < values.length; i++) if (values[i] > max) max = values[i];
  return max;
}

/** The smallest value (Infinity for an empty array); NaN entries are skipped. */
export function minOf(values: ArrayLike<number>): number {
  let min = Infinity;
  for (let i = 0; i < values.length; i++) if (values[i] < min) min = values[i];
  return min;
}

/** The largest absolute value (0 for an empty array); NaN entries are skipped. */
export function maxAbsOf(values: ArrayLike<number>): number {
  let max = 0;
  for (let i = 0; i < values.length; i++) {
    const a = Math.abs(values[i]);
    if (a > max) max = a;
  }
  return max;
}
