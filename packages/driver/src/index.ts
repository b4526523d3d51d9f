/** @xpmesh/driver: the XPmem-like kernel module. */
export const DRIVER_NAME = 'xpmem';
export {
  createXpmemDriver,
  type DriverCounters,
  type DriverStatus,
  type FenceEvent,
  type LostDirtyEvent,
  type MessageEvent,
  type PageStateEvent,
  type PageStateView,
  XpmemDriver,
  type XpmemDriverOptions,
} from './driver.js';
export { DriverError, type DriverErrorCode } from './errors.js';
export { stagesKept } from './page-copy.js';
export {
  mermaidDiagram,
  nextState,
  PAGE_EVENTS,
  PAGE_STATES,
  type PageEvent,
  type PageState,
  TRANSITIONS,
} from './page-state.js';
export { ReverseMap } from './rmap.js';
export { FORGOTTEN_FENCES_KEPT, MAX_NODE_INDEX, NODE_SWEEP_FLOOR, type Segment } from './state.js';
