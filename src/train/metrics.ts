// Classification metrics: mean loss, top-1, top-5, confusion matrix, per-class accuracy.

/** The running sums behind the metrics, saved in a checkpoint taken mid-epoch. */
export interface MetricsSums {
  lossSum: number;
  samples: number;
  top1Hits: number;
  top5Hits: number;
}

/** Running classification metrics: mean loss, top-1, top-5 (n/a with 5 classes or fewer), confusion matrix, per-class accuracy. */
export class ClassificationMetrics {
  private lossSum = 0;
  private samples = 0;
  private top1Hits = 0;
  private top5Hits = 0;
  /** confusion[trueClass * numClasses + predictedClass] */
  readonly confusion: Int32Array;

  constructor(readonly numClasses: number) {
    this.confusion = new Int32Array(numClasses * numClasses);
  }

  /** Add a batch: logits (B x numClasses, row-major), labels, and the batch's mean loss. */
  update(logits: Float32Array, labels: ArrayLike<number>, meanLoss: number): void {
    const C = this.numClasses;
    const B = labels.length;
    for (let n = 0; n < B; n++) {
      const row = n * C;
      const label = labels[n];
      const target = logits[row + label];
      // Rank of the true class = number of classes scoring strictly higher (ties favour the label).
      // A NaN score is never below the label's (`!(x <= target)`): NaN logits are no hit, where
      // `x > target` would count every class of a NaN row as lower and score it a perfect top-1.
      let higher = 0;
      let best = 0;
      for (let c = 0; c < C; c++) {
        if (c !== label && !(logits[row + c] <= target)) higher++;
        if (logits[row + c] > logits[row + best]) best = c;
      }
      if (higher === 0) this.top1Hits++;
      if (higher < 5) this.top5Hits++;
      this.confusion[label * C + best]++;
    }
    this.lossSum += meanLoss * B;
    this.samples += B;
  }

  get count(): number {
    return this.samples;
  }
  get loss(): number {
    return this.samples === 0 ? NaN : this.lossSum / this.samples;
  }
  get top1(): number {
    return this.samples === 0 ? NaN : this.top1Hits / this.samples;
  }
  /** NaN with 5 classes or fewer, where every prediction is in the top 5 and the figure says nothing. */
  get top5(): number {
    return this.samples === 0 || this.numClasses <= 5 ? NaN : this.top5Hits / this.samples;
  }

  /** The running sums (the confusion matrix is not included). */
  sums(): MetricsSums {
    return { lossSum: this.lossSum, samples: this.samples, top1Hits: this.top1Hits, top5Hits: this.top5Hits };
  }

  /** Continue from sums saved earlier: a resumed epoch reports all of its batches, not just the last ones. */
  restoreSums(s: MetricsSums): void {
    ({ lossSum: this.lossSum, samples: this.samples, top1Hits: this.top1Hits, top5Hits: this.top5Hits } = s);
  }

  /** Accuracy of each true class (NaN for a class with no samples). */
  perClassAccuracy(): number[] {
    const C = this.numClasses;
    return Array.from({ length: C }, (_, k) => {
      let total = 0;
      for (let p = 0; p < C; p++) total += this.confusion[k * C + p];
      return total === 0 ? NaN : this.confusion[k * C + k] / total;
    });
  }

  summary(): { loss: number; top1: number; top5: number; count: number } {
    return { loss: this.loss, top1: this.top1, top5: this.top5, count: this.samples };
  }
}
