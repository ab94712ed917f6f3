/**
 * A TCP proxy on 127.0.0.1 between a client and a server that breaks connections on
 * purpose: each new connection is, by the seeded generator, passed through or given one
 * fault after a random number of bytes in either direction:
 *   drop      both sides closed (FIN), as a middlebox giving up
 *   reset     both sides reset (RST)
 *   stall     nothing forwarded for a while, then the connection carries on
 *   truncate  the rest of the answer is withheld and the server side closed; the client
 *             side stays open (a half-dead connection the client must time out)
 * At most `maxFaults` connections are broken, so that a client with retries can finish.
 */
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { Rng } from './rng.js';

export type ProxyFault = 'drop' | 'reset' | 'stall' | 'truncate';
export const PROXY_FAULTS: readonly ProxyFault[] = ['drop', 'reset', 'stall', 'truncate'];

export interface FaultProxyOptions {
  readonly fault: ProxyFault;
  /** Chance that a connection gets the fault (while faults remain). */
  readonly probability: number;
  readonly maxFaults: number;
  /** The fault strikes after a random count of bytes in [0, this) through the proxy. */
  readonly withinBytes: number;
  readonly stallMs: number;
}

export class FaultProxy {
  private server?: Server;
  private readonly sockets = new Set<Socket>();
  faultsInjected = 0;
  connections = 0;

  constructor(private readonly targetPort: number, private readonly rng: Rng, private readonly options: FaultProxyOptions) {}

  get url(): string {
    return `http://127.0.0.1:${(this.server!.address() as AddressInfo).port}`;
  }

  async start(): Promise<void> {
    this.server = createServer((inbound) => this.carry(inbound));
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', () => r()));
  }

  private carry(inbound: Socket): void {
    this.connections++;
    const outbound = connect(this.targetPort, '127.0.0.1');
    const pair = [inbound, outbound];
    for (const s of pair) {
      this.sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        this.sockets.delete(s);
        if (!broken || this.options.fault !== 'truncate') for (const o of pair) o.destroy();
      });
    }
    const faulty = this.faultsInjected < this.options.maxFaults && this.rng.bool(this.options.probability);
    if (faulty) this.faultsInjected++;
    let budget = faulty ? this.rng.int(this.options.withinBytes) : Infinity;
    let broken = false;
    let stalledUntil = 0;
    const pending: { to: Socket; data: Buffer }[] = [];
    const flush = () => {
      while (pending.length) {
        const p = pending.shift()!;
        if (!p.to.destroyed) p.to.write(p.data);
      }
    };
    const strike = () => {
      broken = true;
      switch (this.options.fault) {
        case 'drop':
          inbound.end();
          outbound.end();
          setTimeout(() => pair.forEach((s) => s.destroy()), 50).unref();
          break;
        case 'reset':
          for (const s of pair) (s.resetAndDestroy ? s.resetAndDestroy() : s.destroy());
          break;
        case 'stall':
          stalledUntil = Date.now() + this.options.stallMs;
          setTimeout(() => {
            stalledUntil = 0;
            flush();
          }, this.options.stallMs).unref();
          break;
        case 'truncate':
          // The server side goes; the client's side stays open and silent.
          outbound.destroy();
          break;
      }
    };
    const forward = (from: Socket, to: Socket) => {
      from.on('data', (d: Buffer) => {
        if (broken && this.options.fault !== 'stall') return;
        if (!broken && d.length > budget) {
          const head = d.subarray(0, budget);
          if (head.length) to.write(head);
          budget = Infinity;
          strike();
          if (this.options.fault === 'stall') pending.push({ to, data: d.subarray(head.length) });
          return;
        }
        if (!broken) budget -= d.length;
        if (stalledUntil > 0) pending.push({ to, data: d });
        else to.write(d);
      });
    };
    forward(inbound, outbound);
    forward(outbound, inbound);
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server?.close(() => r()) ?? r());
  }
}
