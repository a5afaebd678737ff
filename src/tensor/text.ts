// Lists in messages: a user reading an error wants the first few names, not twenty thousand
// characters of them.

/** "a, b, c" when there are at most `shown` items, else "a, b, c and 7 more". */
export function firstFew(items: readonly string[], shown: number, separator = ', '): string {
  if (items.length <= shown) return items.join(separator);
  return `${items.slice(0, shown).join(separator)} and ${items.length - shown} more`;
}
