/** Largest input resolution the CLI accepts (memory grows with its square). */
export const MAX_RESOLUTION = 1024;
