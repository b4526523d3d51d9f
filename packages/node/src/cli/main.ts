#!/usr/bin/env node
console.log('xpmesh: under construction');
