export const DRIVER_NAME = 'xpmem';
