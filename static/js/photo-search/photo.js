// Photo in: decode, apply EXIF orientation, downscale to a JPEG of long side maxSide.
import { MESSAGES, UserError } from "./messages.js";

const JPEG_QUALITY = 0.9;

async function decodeImage(file) {
  if (file.type && !file.type.startsWith("image/")) throw new UserError(MESSAGES.notImage);
  if (typeof createImageBitmap === "function") {
    try {
      const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
      return { source: bitmap, width: bitmap.width, height: bitmap.height, release: () => bitmap.close() };
    } catch (e) {
      // Older engines reject the option, some cannot decode this type: try an <img>.
    }
  }
  const url = URL.createObjectURL(file);
  const img = new Image();
  img.decoding = "async";
  img.src = url;
  try {
    await img.decode();
  } catch (e) {
    URL.revokeObjectURL(url);
    throw new UserError(MESSAGES.notImage);
  }
  // <img> applies EXIF orientation by default (CSS image-orientation: from-image).
  return { source: img, width: img.naturalWidth, height: img.naturalHeight, release: () => URL.revokeObjectURL(url) };
}

export async function downscale(file, maxSide) {
  const decoded = await decodeImage(file);
  try {
    if (!decoded.width || !decoded.height) throw new UserError(MESSAGES.notImage);
    const scale = Math.min(1, maxSide / Math.max(decoded.width, decoded.height));
    const width = Math.max(1, Math.round(decoded.width * scale));
    const height = Math.max(1, Math.round(decoded.height * scale));
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff"; // transparent pixels would turn black in a JPEG
    ctx.fillRect(0, 0, width, height);
    ctx.imageSmoothingEnabled = true;
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(decoded.source, 0, 0, width, height);
    const blob = await new Promise((resolve, reject) =>
      canvas.toBlob((b) => (b ? resolve(b) : reject(new UserError(MESSAGES.encodeFailed))), "image/jpeg", JPEG_QUALITY)
    );
    return { blob, width, height };
  } finally {
    decoded.release();
  }
}
